"""Build the wheelhouse that the test hosts (and air-gapped fleets) install from.

It holds the pinned server packages (downloaded from the index), the bundled arbiter, and releases
of the example apps: good ones (1.0.0, 2.0.0, 3.0.0) and drill releases whose local version label says what
they do wrong (9.0.0+importerror, 9.0.0+healtherror, 9.0.0+hangstartup, 9.0.0+slowimport; for the WSGI app
also 9.0.0+hostile, whose master attacks the operations: examples/apps/wsgi/graceful_demo_wsgi/hostile.py).
Drills share no public version with a good release: `==3.0.0` would also match `3.0.0+importerror` (PEP 440
ignores the local label of a candidate when the pin has none) and pip would pick the drill.
It also holds a second gunicorn release (OTHER_RELEASES), so that a deploy can change `gunicorn_version`.

    build_wheelhouse.py [--out build/wheelhouse] [--also REQUIREMENTS ...]

--also adds the wheels of more pinned requirements, for example examples/airflow/requirements.txt for
make test-airflow (a wheelhouse of its own: the usual one stays small).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import build_arbiter_wheel  # noqa: E402

sys.path.insert(0, str(REPO / "tests/lab"))
import lab  # noqa: E402

# Every Python the lab's hosts make app venvs with (bullseye's and bookworm's 3.11, trixie's 3.13).
HOST_PYTHONS = sorted({release["python"] for release in lab.RELEASES.values()})

APPS = {"asgi": REPO / "examples/apps/asgi", "wsgi": REPO / "examples/apps/wsgi"}
RELEASES = {
    "1.0.0": "ok",
    "2.0.0": "ok",
    "3.0.0": "ok",
    "9.0.0+importerror": "import-error",
    "9.0.0+healtherror": "health-error",
    "9.0.0+hangstartup": "hang-startup",
    "9.0.0+slowimport": "slow-import",
}
# Drills only one of the example apps implements.
KIND_RELEASES = {"wsgi": {"9.0.0+hostile": "hostile"}}
# Releases beside the pinned ones in wheelhouse-requirements.txt, each downloaded on its own (one pip
# resolution cannot hold two versions of a package), for deploys that change gunicorn_version
# (tests/proof/change_proof.py). No dependencies of their own: gunicorn needs none on Python 3.10 and newer.
OTHER_RELEASES = ["gunicorn==26.2.0"]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def build_release(kind: str, version: str, behaviour: str, out: Path) -> None:
    dist = f"graceful_demo_{kind}"
    if list(out.glob(f"{dist}-{version}-*.whl")):
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / kind
        shutil.copytree(APPS[kind], src, ignore=shutil.ignore_patterns("__pycache__"))
        init = src / dist / "__init__.py"
        text = init.read_text()
        text = re.sub(r'^__version__ = ".*"$', f'__version__ = "{version}"', text, count=1, flags=re.M)
        default = 'os.environ.get("DEMO_BEHAVIOUR", "ok")'
        text = text.replace(default, default.replace('"ok"', f'"{behaviour}"'))
        init.write_text(text)
        pip("wheel", "--no-deps", "-w", str(out), str(src))


def source_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "build/wheelhouse")
    parser.add_argument("--also", type=Path, action="append", default=[], help="more requirements files to download")
    args = parser.parse_args()
    out: Path = args.out.resolve()  # the arbiter wheel is built from inside arbiter/
    out.mkdir(parents=True, exist_ok=True)
    # The hosts run CPython on the controller's architecture; one download per Python version, into one
    # folder, where pip on each host picks the files that fit it.
    for version in HOST_PYTHONS:
        target = ["--only-binary=:all:", "--python-version", version, "--implementation", "cp", "-d", str(out)]
        pip("download", *target, "-r", str(REPO / "tests/lab/wheelhouse-requirements.txt"))
        for requirement in OTHER_RELEASES:
            pip("download", *target, "--no-deps", requirement)
    # Extra requirements (Airflow's) are for the default release's hosts only.
    for requirements in args.also:
        pip(
            "download",
            "--only-binary=:all:",
            "--python-version",
            lab.RELEASES[lab.DEFAULT_RELEASE]["python"],
            "--implementation",
            "cp",
            "-d",
            str(out),
            "-r",
            str(requirements),
        )
    for old in out.glob("graceful_gunicorn_arbiter-*.whl"):
        old.unlink()  # always rebuilt: it changes with the collection
    build_arbiter_wheel.build(out)
    for kind in APPS:
        # Releases are rebuilt when the example app's source changed since they were built.
        stamp = out / f".graceful_demo_{kind}.source"
        if not stamp.exists() or stamp.read_text() != source_digest(APPS[kind]):
            for old in out.glob(f"graceful_demo_{kind}-*.whl"):
                old.unlink()
            stamp.write_text(source_digest(APPS[kind]))
        for version, behaviour in {**RELEASES, **KIND_RELEASES.get(kind, {})}.items():
            build_release(kind, version, behaviour, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
