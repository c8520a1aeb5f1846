"""Build the bundled arbiter's wheel from arbiter/, byte for byte the same on every machine.

    python tests/build_arbiter_wheel.py [--out DIR]     (default: roles/server/files, the wheel the role ships)

flit_core (the arbiter's build backend, dependency-free) writes every file with one fixed timestamp when
SOURCE_DATE_EPOCH is set, so a wheel built from the same source has the same sha256 anywhere.
tests/unit/test_arbiter_wheel.py rebuilds it and compares it with the shipped one.
"""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "arbiter"
SHIPPED_DIR = REPO / "roles" / "server" / "files"
# 1980-01-01, the earliest time a zip file can record.
SOURCE_DATE_EPOCH = "315532800"


def build(out: Path) -> Path:
    """Build the wheel into out and return its path."""
    import flit_core.buildapi

    out.mkdir(parents=True, exist_ok=True)
    previous_cwd, previous_epoch = Path.cwd(), os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    try:
        os.chdir(SOURCE)
        name = flit_core.buildapi.build_wheel(str(out.resolve()))
    finally:
        os.chdir(previous_cwd)
        if previous_epoch is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous_epoch
    return out / name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args()
    for old in args.out.glob("graceful_gunicorn_arbiter-*.whl"):
        old.unlink()
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
