"""Build the collection tarball and import it the way Galaxy does; fail on any warning or error.

galaxy-importer runs offline here: no containers, ansible-test off (make sanity runs it), ansible-lint on.
Its log ends "Importer processing completed successfully" even when it warned, so this reads every line.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = """[galaxy-importer]
RUN_ANSIBLE_TEST = False
RUN_ANSIBLE_LINT = True
OFFLINE_ANSIBLE_LINT = True
"""


def build(out_dir):
    """The tarball ansible-galaxy builds from the checkout (galaxy.yml's build_ignore applies)."""
    subprocess.run(
        [Path(sys.executable).parent / "ansible-galaxy", "collection", "build", "--force", "--output-path", out_dir],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tarball,) = Path(out_dir).glob("graceful-gunicorn-*.tar.gz")
    return tarball


def problems(log):
    """The importer's warning and error lines."""
    return [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR", "CRITICAL"))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "build" / "dist"), help="where the tarball is built")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tarball = build(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "galaxy-importer.cfg"
        config.write_text(CONFIG)
        # The importer installs the tarball under ~/.ansible/collections. A copy left there outlives the run and
        # shadows the checkout for the next ansible-lint, so its home is the temporary directory.
        env = dict(os.environ, GALAXY_IMPORTER_CONFIG=str(config), ANSIBLE_LOCAL_TEMP=tmp, HOME=tmp)
        # ansible-lint and ansible-doc must be found beside this interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        result = subprocess.run(
            [sys.executable, "-m", "galaxy_importer.main", str(tarball)],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    log = result.stdout
    found = problems(log)
    done = "Importer processing completed successfully" in log
    if result.returncode != 0 or not done or found:
        print(log if not found else "\n".join(found))
        print(f"galaxy-importer: {f'{len(found)} warnings or errors' if found else 'import failed'}")
        return 1
    print(f"galaxy-importer: {tarball.name} imports without a warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
