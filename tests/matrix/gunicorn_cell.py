"""One cell of the gunicorn matrix: the bundled arbiter's unit and integration tests under one gunicorn release.

    python tests/matrix/gunicorn_cell.py 25.1.0              # any exact gunicorn version
    python tests/matrix/gunicorn_cell.py 26.2.0 --rebuild    # a fresh venv even when the stamp matches
    python tests/matrix/gunicorn_cell.py 27.0.1 --suites integration -- -k upgrade -x

The cell's venv is build/matrix/gunicorn-<version>/ (Python 3.11): that gunicorn, the packages the arbiter's
tests need (pytest, pytest-timeout, uvicorn, uvicorn-worker, flit_core, ansible-core) at the pins of
tests/requirements-controller.txt, and the arbiter installed from ./arbiter as the Makefile's `.arbiter` target
installs it. It is reused while its stamp (interpreter, requirements, this script's format, the digest of
arbiter/pyproject.toml and arbiter/src) matches: a changed requirement builds the venv again, a changed
arbiter source only reinstalls the arbiter. Before the tests run, the venv's gunicorn must be the requested
version and the arbiter must import from the venv.

The suites (arbiter/tests/unit, then arbiter/tests/integration; arbiter/tests/systemd needs test hosts and is
left out) run with that venv's python and its bin first on PATH, so the masters the tests start run that
gunicorn. Each test is bounded by pytest-timeout and each suite by a wall-clock limit. The output goes to
build/matrix/gunicorn-<version>.log (the run before it in ...log.prev); the last line is the cell's summary, e.g.

    matrix: gunicorn 25.1.0 on Python 3.11: arbiter integration 46 passed, unit 159 passed (185 s)

and the exit status is non-zero when the venv cannot be built, a suite fails, or a limit is reached.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import time
from pathlib import Path

import cell
from cell import MATRIX, REPO, CellError

ARBITER = REPO / "arbiter"
REQUIREMENTS = REPO / "tests" / "requirements-controller.txt"
PYTHON_VERSION = "3.11"
# What arbiter/tests/{conftest.py,unit,integration} and the example apps they serve import or run besides the
# standard library, gunicorn and the arbiter: ansible-core for the role's systemd_env_quote filter, which
# unit/test_envfile.py checks the arbiter's parser against. flit_core builds the arbiter (no build isolation).
NEEDED = ("pytest", "pytest-timeout", "uvicorn", "uvicorn-worker", "flit_core", "ansible-core")
SUITES = {"unit": "arbiter/tests/unit", "integration": "arbiter/tests/integration"}
# Bumped when what the venv holds changes in a way the other inputs do not show.
CELL_FORMAT = 1
VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?")


def pinned_requirements(version: str) -> list[str]:
    """The requested gunicorn and the NEEDED lines of tests/requirements-controller.txt, as written there."""
    found = cell.requirement_lines(REQUIREMENTS)
    missing = [name for name in NEEDED if cell.canonical(name) not in found]
    if missing:
        raise CellError(f"{REQUIREMENTS.relative_to(REPO)} does not list {', '.join(missing)}")
    return [f"gunicorn=={version}", *(found[cell.canonical(name)] for name in NEEDED)]


def arbiter_digest() -> str:
    """sha256 over arbiter/pyproject.toml and arbiter/src (paths and contents), what `pip install ./arbiter` takes."""
    digest = hashlib.sha256()
    files = [ARBITER / "pyproject.toml", *sorted((ARBITER / "src").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ARBITER)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def default_python() -> str:
    """A Python 3.11 to build the venv from: this interpreter's base when it is 3.11, else python3.11 on PATH."""
    if sys.version_info[:2] == (3, 11):
        return getattr(sys, "_base_executable", None) or sys.executable
    return shutil.which("python3.11") or "python3.11"


def cell_env(venv: Path | None = None) -> dict:
    """A clean environment without GUNICORN_CMD_ARGS (the masters the tests start take their settings from the
    tests alone); with venv, that venv active."""
    return cell.clean_env(venv, drop=("GUNICORN_CMD_ARGS",))


# What the venv really holds: its Python, gunicorn's version and where gunicorn and the arbiter import from.
PROBE = (
    "import json, sys, importlib.metadata as m, gunicorn, graceful_arbiter.arbiter as a\n"
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'gunicorn': gunicorn.__version__,\n"
    "  'gunicorn_dist': m.version('gunicorn'), 'gunicorn_file': gunicorn.__file__, 'arbiter_file': a.__file__}))"
)


def prepare(version: str, python: str, rebuild: bool, log) -> tuple[Path, dict]:
    """The release's venv: built again when its packages' stamp does not match, the arbiter reinstalled when its
    source changed, checked before use."""
    venv = MATRIX / f"gunicorn-{version}"
    requirements = pinned_requirements(version)
    found_python = cell.python_version(python)
    if not found_python or not found_python.startswith(PYTHON_VERSION + "."):
        given = f"Python {found_python}" if found_python else "no working Python"
        raise CellError(f"{python} is {given}, not {PYTHON_VERSION}")
    wanted = {
        "format": CELL_FORMAT,
        "python": found_python,
        "requirements": requirements,
        "arbiter": arbiter_digest(),
    }
    env = cell_env(venv)
    stamp = cell.build_or_reuse_venv(
        venv,
        python,
        requirements,
        wanted,
        log,
        env,
        rebuild=rebuild,
        detail=", ".join(requirements),
        package_keys=("format", "python", "requirements"),
    )
    if stamp.get("arbiter") != wanted["arbiter"]:
        print("matrix: installing the arbiter from ./arbiter", flush=True)
        # As the Makefile's .arbiter target: the masters the tests start run it from the venv.
        pip = [venv / "bin" / "python", "-m", "pip"]
        step = [*pip, "install", "-q", "--no-deps", "--no-build-isolation", "--force-reinstall", "./arbiter"]
        if cell.run(step, log, timeout=300, env=env, echo=False):
            raise CellError("could not install the arbiter (see the log)")
    found = cell.probe(venv, PROBE, "gunicorn and the arbiter", env)
    problems = []
    if not found["gunicorn"] == found["gunicorn_dist"] == version:
        problems.append(f"gunicorn is {found['gunicorn']} (distribution {found['gunicorn_dist']}), not {version}")
    problems += cell.outside_venv(venv, found, {"gunicorn": "gunicorn_file", "the arbiter": "arbiter_file"})
    if found["python"] != PYTHON_VERSION:
        problems.append(f"the venv runs Python {found['python']}, not {PYTHON_VERSION}")
    if not (venv / "bin" / "graceful-gunicorn").exists():
        problems.append("bin/graceful-gunicorn is missing")
    cell.accept_venv(venv, wanted, problems)
    return venv, found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
        usage="%(prog)s [options] VERSION [-- PYTEST_ARGS...]",
    )
    parser.add_argument("version", help="an exact gunicorn release, e.g. 25.1.0")
    parser.add_argument("--python", default=default_python(), help="a Python 3.11 interpreter (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="build the venv again even when its stamp matches")
    parser.add_argument(
        "--suites", default="unit,integration", help="comma-separated, of: unit, integration (default: %(default)s)"
    )
    parser.add_argument("--test-timeout", type=float, default=300, help="seconds per test (default: %(default)s)")
    parser.add_argument(
        "--suite-timeout", type=float, default=2400, help="wall-clock seconds per suite (default: %(default)s)"
    )
    argv = sys.argv[1:]
    # Everything after `--` goes to pytest as it is (e.g. -k upgrade -x).
    pytest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not VERSION_RE.fullmatch(args.version):
        parser.error(f"not an exact version: {args.version!r}")
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        parser.error(f"unknown suites {unknown}; choose among {', '.join(SUITES)}")

    MATRIX.mkdir(parents=True, exist_ok=True)
    log_path = MATRIX / f"gunicorn-{args.version}.log"
    if log_path.exists():  # the run before this one stays beside it, a failure's details with it
        log_path.replace(log_path.with_suffix(".log.prev"))
    started = time.monotonic()
    results, failed = {}, False
    with open(log_path, "w") as log:
        try:
            venv, found = prepare(args.version, args.python, args.rebuild, log)
        except CellError as exc:
            message = f"matrix: {exc}"
            log.write(f"{message}\n")
            print(message, file=sys.stderr)
            summary = f"matrix: gunicorn {args.version} on Python {PYTHON_VERSION}: venv not ready ({message})"
            log.write(summary + "\n")
            print(summary)
            return 2
        line = f"matrix: gunicorn {found['gunicorn']} from {found['gunicorn_file']}; arbiter {found['arbiter_file']}"
        log.write(line + "\n")
        print(line, flush=True)
        env = cell_env(venv)
        for suite in suites:
            status, results[suite] = cell.run_pytest(
                venv,
                [SUITES[suite]],
                pytest_args,
                args.test_timeout,
                args.suite_timeout,
                log,
                log_path,
                env,
                name=SUITES[suite],
            )
            failed = failed or status != 0
        elapsed = time.monotonic() - started
        order = sorted(results, key=lambda s: s != "integration")  # integration first, as the matrix reads it
        summary = (
            f"matrix: gunicorn {args.version} on Python {found['python']}: arbiter "
            + ", ".join(f"{suite} {results[suite]}" for suite in order)
            + f" ({elapsed:.0f} s)"
        )
        log.write(summary + "\n")
    print(f"matrix: log in {log_path.relative_to(REPO)}")
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
