# ansible-test bootstraps pip in its sanity venvs with a script it downloads from a host outside the
# package index. Where only the index is reachable, this stand-in is placed in ansible-test's cache
# instead (see the Makefile's sanity target): it installs the interpreter's bundled pip, then the
# release ansible-test pins, from the index.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pip==24.2"])
