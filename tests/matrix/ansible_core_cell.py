"""One cell of the ansible-core matrix: the collection's unit tests and ansible-test sanity under one series.

    python tests/matrix/ansible_core_cell.py 2.17                 # 2.17, 2.18, 2.19 or 2.20
    python tests/matrix/ansible_core_cell.py 2.20 --rebuild       # a fresh venv even when the stamp matches
    python tests/matrix/ansible_core_cell.py 2.18 --only unit -- -k rollout -x
    python tests/matrix/ansible_core_cell.py 2.17 --only sanity -- --test pylint

The cell's venv is build/matrix/ansible-core-<X.Y>/, built from tests/matrix/ansible-core-<X.Y>.txt: the newest
patch release of that series, pinned exactly, and the packages tests/unit and tests/proof need, pinned as
tests/requirements-controller.txt pins them (a line that differs from that file is refused). 2.17 to 2.19 run on
Python 3.11; 2.20 needs Python 3.12, taken from python3.12 on PATH or ~/.pyenv/versions/3.12*/bin/python3.12
(exit status 2, naming what to install, when there is none; --python gives another). The venv is reused while
its stamp (this script's format, the interpreter and the requirements file) matches, and before anything runs
its ansible-core must be the pinned release, imported from the venv.

Then, as `make unit` and `make sanity` run them with the project venv:

- unit: the venv's pytest on tests/unit and tests/proof, with the venv's bin first on PATH (the tests run its
  ansible-playbook, ansible-doc and ansible-config) and ANSIBLE_COLLECTIONS_PATH=build/collections (`make
  collection` runs first when that link is missing). arbiter/tests/unit, the third suite of `make unit`, imports
  nothing from Ansible and is left out (tests/matrix/gunicorn_cell.py runs it).
- sanity: the tree, less tests/sanity/rsync-exclude, copied to $TMPDIR/graceful-gunicorn-sanity-<X.Y>/
  ansible_collections/graceful/gunicorn (one per series, so cells can run side by side; removed afterwards),
  and the venv's `ansible-test sanity --python <venv's X.Y> --color no --requirements` run there. ansible-test's
  pip bootstrap script, which it would download from outside the package index, is the stand-in
  tests/sanity/get_pip_offline.py, placed in ~/.ansible/test/cache under the name this release looks for.

Each test is bounded by pytest-timeout, each step by a wall-clock limit (its process group is killed past it).
The logs are build/matrix/ansible-core-<X.Y>.log (venv and unit) and build/matrix/ansible-core-<X.Y>-sanity.log
(printed: sanity's ERROR and FATAL lines on failure). The last line is the cell's summary, e.g.

    matrix: ansible-core 2.17.14 on Python 3.11: unit 1038 passed; sanity 24 tests passed (104 s)

and the exit status is 0 when every step passed, 1 when a step failed or ran out of time, 2 when the venv
could not be made (no suitable Python, a package that would not install, a requirements file out of step).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cell
from cell import MATRIX, REPO, TIMED_OUT, CellError

HERE = REPO / "tests" / "matrix"
CONTROLLER_REQUIREMENTS = REPO / "tests" / "requirements-controller.txt"
COLLECTIONS = REPO / "build" / "collections"
COLLECTION_LINK = COLLECTIONS / "ansible_collections" / "graceful" / "gunicorn"
RSYNC_EXCLUDE = REPO / "tests" / "sanity" / "rsync-exclude"
PIP_STAND_IN = REPO / "tests" / "sanity" / "get_pip_offline.py"
PIP_CACHE = Path.home() / ".ansible" / "test" / "cache"
# The Python each series runs on here: the project's 3.11 where the series supports it, 3.12 for 2.20
# (ansible-core 2.20 requires Python 3.12 or newer on the controller).
SERIES = {"2.17": "3.11", "2.18": "3.11", "2.19": "3.11", "2.20": "3.12"}
UNIT_SUITES = ("tests/unit", "tests/proof")
# Bumped when what the venv holds changes in a way the other inputs do not show.
CELL_FORMAT = 1


def cell_requirements(series: str) -> tuple[Path, str]:
    """The series' requirements file and its exact ansible-core release, checked against the controller's pins."""
    path = HERE / f"ansible-core-{series}.txt"
    if not path.is_file():
        raise CellError(f"{path.relative_to(REPO)} is missing")
    wanted = cell.requirement_lines(path)
    core = re.fullmatch(r"ansible-core\s*==\s*([0-9]+\.[0-9]+\.[0-9]+)", wanted.get("ansible-core", ""))
    if not core or not core.group(1).startswith(series + "."):
        raise CellError(f"{path.relative_to(REPO)} must pin ansible-core=={series}.N exactly")
    controller = cell.requirement_lines(CONTROLLER_REQUIREMENTS)
    differ = [
        f"{line!r} (the controller has {controller.get(name)!r})"
        for name, line in wanted.items()
        if name != "ansible-core" and controller.get(name) != line
    ]
    if differ:
        raise CellError(
            f"{path.relative_to(REPO)} is out of step with {CONTROLLER_REQUIREMENTS.relative_to(REPO)}: "
            + "; ".join(differ)
        )
    return path, core.group(1)


def find_python(minor: str) -> str | None:
    """A Python <minor> that runs: this interpreter's base, python<minor> on PATH, then pyenv's builds."""
    candidates = []
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == minor:
        candidates.append(getattr(sys, "_base_executable", None) or sys.executable)
    candidates.append(shutil.which(f"python{minor}"))
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for root in dict.fromkeys((pyenv_root, "/root/.pyenv")):
        builds = glob.glob(os.path.join(root, "versions", f"{minor}*", "bin", f"python{minor}"))
        candidates += sorted(builds, key=lambda p: [int(n) for n in re.findall(r"[0-9]+", Path(p).parents[1].name)])[
            ::-1
        ]
    for candidate in dict.fromkeys(c for c in candidates if c):
        version = cell.python_version(candidate)
        if version and version.rsplit(".", 1)[0] == minor:
            return candidate
    return None


def cell_env(venv: Path | None = None) -> dict:
    """A clean environment; with venv, that venv active and Ansible's settings as the Makefile exports them for
    make unit and make sanity."""
    settings = {"ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_CONFIG": str(REPO / "tests" / "ansible.cfg")}
    return cell.clean_env(venv, venv_settings=settings)


# What the venv holds: its Python, ansible-core's version and where ansible and ansible_test import from.
PROBE = (
    "import json, sys, importlib.metadata as m, ansible, ansible_test\n"
    "from ansible.release import __version__\n"
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'ansible_core': __version__,\n"
    "  'dist': m.version('ansible-core'), 'ansible_file': ansible.__file__, 'test_file': ansible_test.__file__}))"
)


def prepare(series: str, python: str, rebuild: bool, log) -> tuple[Path, dict]:
    """The series' venv, built again when its stamp does not match, checked before use."""
    requirements, release = cell_requirements(series)
    venv = MATRIX / f"ansible-core-{series}"
    wanted = {
        "format": CELL_FORMAT,
        "python": [python, cell.python_version(python)],
        "requirements": requirements.read_text(encoding="utf-8"),
    }
    detail = f"ansible-core {release}, {python}"
    cell.build_or_reuse_venv(venv, python, requirements, wanted, log, cell_env(venv), rebuild=rebuild, detail=detail)
    found = cell.probe(venv, PROBE, "ansible-core", cell_env(venv))
    problems = []
    if not found["ansible_core"] == found["dist"] == release:
        problems.append(f"ansible-core is {found['ansible_core']} (distribution {found['dist']}), not {release}")
    problems += cell.outside_venv(venv, found, {"ansible": "ansible_file", "ansible_test": "test_file"})
    if found["python"] != SERIES[series]:
        problems.append(f"the venv runs Python {found['python']}, not {SERIES[series]}")
    cell.accept_venv(venv, wanted, problems)
    return venv, found


def unit(venv: Path, args, log, log_path: Path) -> tuple[bool, str]:
    make_collection = ["make", "--no-print-directory", "collection"]
    if not COLLECTION_LINK.exists() and cell.run(make_collection, log, timeout=60, env=cell_env(), echo=False):
        return False, "make collection failed"
    pytest_args = args.extra if args.only == "unit" else []
    status, counts = cell.run_pytest(
        venv, UNIT_SUITES, pytest_args, args.test_timeout, args.unit_timeout, log, log_path, cell_env(venv)
    )
    return status == 0, counts


def pip_bootstrap(venv: Path, log) -> None:
    """The stand-in for ansible-test's pip bootstrap script, under the name this release looks for."""
    sources = list(venv.glob("lib/python3*/site-packages/ansible_test/_internal/python_requirements.py"))
    pinned = sources and re.search(r"\bpip='([0-9][0-9.]*)'", sources[0].read_text(encoding="utf-8"))
    if not pinned:
        raise CellError("no pip version found in ansible_test/_internal/python_requirements.py")
    target = PIP_CACHE / f"get_pip_{pinned.group(1).replace('.', '_')}.py"
    stand_in = PIP_STAND_IN.read_bytes()
    try:
        cached = target.read_bytes()
    except OSError:
        cached = b""
    # A real get-pip.py (downloaded where its host is reachable) is kept; an older copy of the stand-in is not.
    if not cached or (cached != stand_in and cached.split(b"\n", 1)[0] == stand_in.split(b"\n", 1)[0]):
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(target.name + f".{os.getpid()}")
        shutil.copyfile(PIP_STAND_IN, temp)
        temp.chmod(0o644)
        os.replace(temp, target)
        log.write(f"matrix: {PIP_STAND_IN.relative_to(REPO)} installed as {target}\n")


def sanity(venv: Path, found: dict, args, log_path: Path) -> tuple[bool, str]:
    root = Path(tempfile.gettempdir()) / f"graceful-gunicorn-sanity-{args.series}"
    tree = root / "ansible_collections" / "graceful" / "gunicorn"
    with open(log_path, "w") as log:
        try:
            pip_bootstrap(venv, log)
            shutil.rmtree(root, ignore_errors=True)
            tree.mkdir(parents=True)
            copy = ["rsync", "-a", f"--exclude-from={RSYNC_EXCLUDE}", f"{REPO}/", f"{tree}/"]
            if cell.run(copy, log, timeout=300, env=cell_env(), echo=False):
                return False, "the copy of the tree failed"
            command = [
                venv / "bin" / "ansible-test",
                "sanity",
                "--python",
                found["python"],
                "--color",
                "no",
                "--requirements",
                *(args.extra if args.only == "sanity" else []),
            ]
            print(f"matrix: ansible-test sanity in {tree} (log: {log_path.relative_to(REPO)})", flush=True)
            status = cell.run(command, log, timeout=args.sanity_timeout, env=cell_env(venv), cwd=tree, echo=False)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    text = log_path.read_text(errors="replace")
    ran = len(re.findall(r"^Running sanity test", text, re.M))
    if status == 0:
        return True, f"{ran} test{'s' if ran != 1 else ''} passed"
    for line in text.splitlines():
        if re.match(r"(ERROR|FATAL)", line):
            print(line)
    failed = re.search(r"The ([0-9]+) sanity test\(s\) listed below \(out of ([0-9]+)\) failed", text)
    if status == TIMED_OUT:
        return False, f"killed after {args.sanity_timeout:g} s ({ran} tests started)"
    if failed:
        return False, f"{failed.group(1)} of {failed.group(2)} tests failed"
    return False, f"ansible-test exit status {status} ({ran} tests ran)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("series", choices=sorted(SERIES), help="the ansible-core series")
    parser.add_argument("--python", help="the interpreter to build the venv from (default: found as described)")
    parser.add_argument("--rebuild", action="store_true", help="build the venv again even when its stamp matches")
    parser.add_argument("--only", choices=("unit", "sanity"), help="run one of the two steps")
    parser.add_argument("--test-timeout", type=float, default=300, help="seconds per unit test (default: %(default)s)")
    parser.add_argument(
        "--unit-timeout", type=float, default=1200, help="wall-clock seconds for the unit tests (default: %(default)s)"
    )
    parser.add_argument(
        "--sanity-timeout", type=float, default=2400, help="wall-clock seconds for sanity (default: %(default)s)"
    )
    parser.usage = "%(prog)s [options] {2.17,2.18,2.19,2.20} [-- more pytest or ansible-test arguments, with --only]"
    argv, extra = sys.argv[1:], []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.extra = extra
    if args.extra and not args.only:
        parser.error("extra arguments need --only unit or --only sanity")
    minor = SERIES[args.series]
    label = f"matrix: ansible-core {args.series}"

    started = time.monotonic()
    MATRIX.mkdir(parents=True, exist_ok=True)
    log_path = MATRIX / f"ansible-core-{args.series}.log"
    results, failed = [], False
    with open(log_path, "w") as log:
        python = args.python or find_python(minor)
        try:
            if not python:
                raise CellError(
                    f"ansible-core {args.series} runs here on Python {minor}, and there is none: no working "
                    f"python{minor} on PATH nor ~/.pyenv/versions/{minor}*/bin/python{minor}. Install Python {minor} "
                    f"(e.g. `pyenv install {minor}`, or the distribution's python{minor} and python{minor}-venv) "
                    "or pass --python"
                )
            given = cell.python_version(python)
            if not given or given.rsplit(".", 1)[0] != minor:
                raise CellError(f"{python} is {'Python ' + given if given else 'no working Python'}, not {minor}")
            venv, found = prepare(args.series, python, args.rebuild, log)
        except (CellError, subprocess.SubprocessError, OSError) as exc:
            summary = f"{label} on Python {minor}: venv not ready: {exc}"
            log.write(summary + "\n")
            print(f"matrix: log in {log_path.relative_to(REPO)}", file=sys.stderr)
            print(summary, file=sys.stderr)
            return 2
        line = f"matrix: ansible-core {found['ansible_core']} from {found['ansible_file']}"
        log.write(line + "\n")
        print(line, flush=True)
        if args.only in (None, "unit"):
            ok, counts = unit(venv, args, log, log_path)
            results.append(f"unit {counts}")
            failed = failed or not ok
    if args.only in (None, "sanity"):
        try:
            ok, counts = sanity(venv, found, args, MATRIX / f"ansible-core-{args.series}-sanity.log")
        except CellError as exc:
            ok, counts = False, str(exc)
        results.append(f"sanity {counts}")
        failed = failed or not ok
    elapsed = time.monotonic() - started
    summary = f"matrix: ansible-core {found['ansible_core']} on Python {found['python']}: " + "; ".join(results)
    summary += f" ({elapsed:.0f} s)"
    with open(log_path, "a") as log:
        log.write(summary + "\n")
    print(f"matrix: logs in {log_path.relative_to(REPO)} and ansible-core-{args.series}-sanity.log")
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
