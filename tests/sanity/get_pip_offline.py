# ansible-test bootstraps pip in its sanity venvs with a script it downloads from a host outside the
# package index. Where only the index is reachable, this stand-in is placed in ansible-test's cache
# instead (see the Makefile's sanity target and tests/matrix/ansible_core_cell.py): it installs the
# interpreter's bundled pip, then, from the index, what ansible-test asks for. Like get-pip.py it takes
# pip install's arguments: ansible-test passes its pins (pip==24.2 for ansible-core 2.18 and 2.19,
# pip==23.1.2 setuptools==67.7.2 wheel==0.37.1 for 2.17, pip==25.2 for 2.20). get-pip.py's own options
# (--no-setuptools, --no-wheel, given by 2.20) are dropped: nothing is installed beyond what is asked for.
import subprocess
import sys

GET_PIP_OPTIONS = ("--no-setuptools", "--no-wheel")

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
wanted = [arg for arg in sys.argv[1:] if arg not in GET_PIP_OPTIONS] or ["pip==24.2"]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted])
