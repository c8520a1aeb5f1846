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
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARBITER = REPO / "arbiter"
REQUIREMENTS = REPO / "tests" / "requirements-controller.txt"
MATRIX = REPO / "build" / "matrix"
PYTHON_VERSION = "3.11"
# What arbiter/tests/{conftest.py,unit,integration} and the example apps they serve import or run besides the
# standard library, gunicorn and the arbiter: ansible-core for the role's systemd_env_quote filter, which
# unit/test_envfile.py checks the arbiter's parser against. flit_core builds the arbiter (no build isolation).
NEEDED = ("pytest", "pytest-timeout", "uvicorn", "uvicorn-worker", "flit_core", "ansible-core")
SUITES = {"unit": "arbiter/tests/unit", "integration": "arbiter/tests/integration"}
# Bumped when what the venv holds changes in a way the other inputs do not show.
CELL_FORMAT = 1
VERSION_RE = re.compile(r"[0-9]+(\.[0-9]+)*((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(version: str) -> list[str]:
    """The requested gunicorn and the NEEDED lines of tests/requirements-controller.txt, as written there."""
    found = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if name and canonical(name.group()) in map(canonical, NEEDED):
            found[canonical(name.group())] = line
    missing = [name for name in NEEDED if canonical(name) not in found]
    if missing:
        raise SystemExit(f"matrix: {REQUIREMENTS.relative_to(REPO)} does not list {', '.join(missing)}")
    return [f"gunicorn=={version}", *(found[canonical(name)] for name in NEEDED)]


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


def clean_env(venv: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("GUNICORN_CMD_ARGS", None)
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(command: list, log, timeout: float, env: dict | None = None, echo: bool = True) -> int:
    """Run command with its output streamed to the log (and stdout); kill its process group past timeout."""
    log.write(f"$ {' '.join(map(str, command))}\n")
    log.flush()
    proc = subprocess.Popen(
        [str(c) for c in command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    deadline = time.monotonic() + timeout
    timed_out = False

    def watchdog():
        nonlocal timed_out
        while proc.poll() is None:
            if time.monotonic() > deadline:
                timed_out = True
                with_group(proc.pid, signal.SIGTERM)
                time.sleep(10)
                with_group(proc.pid, signal.SIGKILL)
                return
            time.sleep(1)

    threading.Thread(target=watchdog, daemon=True).start()
    for line in proc.stdout:
        log.write(line)
        if echo:
            sys.stdout.write(line)
    proc.wait()
    log.flush()
    if timed_out:
        message = f"matrix: {command[-1]} killed after its {timeout:g} s limit\n"
        log.write(message)
        sys.stdout.write(message)
        return 124
    return proc.returncode


def with_group(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, sig)


def probe(venv: Path) -> dict:
    """What the venv really holds: its Python, gunicorn's version and where gunicorn and the arbiter import from."""
    code = (
        "import json, sys, importlib.metadata as m, gunicorn, graceful_arbiter.arbiter as a\n"
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'gunicorn': gunicorn.__version__,\n"
        "  'gunicorn_dist': m.version('gunicorn'), 'gunicorn_file': gunicorn.__file__, 'arbiter_file': a.__file__}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(venv),
        cwd="/",
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"matrix: the venv {venv} does not import gunicorn and the arbiter:\n{out.stderr}")
    return json.loads(out.stdout)


def prepare(version: str, python: str, rebuild: bool, log) -> tuple[Path, dict]:
    venv = MATRIX / f"gunicorn-{version}"
    requirements = pinned_requirements(version)
    stamp_path = venv / ".cell-stamp.json"
    wanted = {
        "format": CELL_FORMAT,
        "python": subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "requirements": requirements,
        "arbiter": arbiter_digest(),
    }
    if not wanted["python"].startswith(PYTHON_VERSION + "."):
        raise SystemExit(f"matrix: {python} is Python {wanted['python']}, not {PYTHON_VERSION}")
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    env = clean_env(venv)
    pip = [venv / "bin" / "python", "-m", "pip"]
    packages_current = not rebuild and all(stamp.get(k) == wanted[k] for k in ("format", "python", "requirements"))
    if not packages_current:
        log.write(f"matrix: building {venv.relative_to(REPO)}\n")
        print(f"matrix: building {venv.relative_to(REPO)} ({', '.join(requirements)})", flush=True)
        if venv.exists():
            shutil.rmtree(venv)
        stamp = {}
        steps = [
            [python, "-m", "venv", venv],
            [*pip, "install", "-q", "-r", venv / "requirements.txt"],
        ]
        venv.mkdir(parents=True)
        (venv / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))
        for step in steps:
            if run(step, log, timeout=900, env=env if step[0] != python else clean_env(), echo=False):
                raise SystemExit(f"matrix: could not build {venv.relative_to(REPO)} (see the log)")
    if stamp.get("arbiter") != wanted["arbiter"]:
        print("matrix: installing the arbiter from ./arbiter", flush=True)
        # As the Makefile's .arbiter target: the masters the tests start run it from the venv.
        step = [*pip, "install", "-q", "--no-deps", "--no-build-isolation", "--force-reinstall", "./arbiter"]
        if run(step, log, timeout=300, env=env, echo=False):
            raise SystemExit("matrix: could not install the arbiter (see the log)")
    found = probe(venv)
    site = str(venv.resolve())
    problems = []
    if not found["gunicorn"] == found["gunicorn_dist"] == version:
        problems.append(f"gunicorn is {found['gunicorn']} (distribution {found['gunicorn_dist']}), not {version}")
    problems += [
        f"{what} imports from {found[key]}, outside the venv"
        for what, key in (("gunicorn", "gunicorn_file"), ("the arbiter", "arbiter_file"))
        if not os.path.realpath(found[key]).startswith(site + os.sep)
    ]
    if found["python"] != PYTHON_VERSION:
        problems.append(f"the venv runs Python {found['python']}, not {PYTHON_VERSION}")
    if not (venv / "bin" / "graceful-gunicorn").exists():
        problems.append("bin/graceful-gunicorn is missing")
    if problems:
        stamp_path.unlink(missing_ok=True)
        raise SystemExit(f"matrix: {venv.relative_to(REPO)}: " + "; ".join(problems))
    stamp_path.write_text(json.dumps(wanted, indent=1) + "\n")
    return venv, found


def pytest_counts(output: str) -> str:
    """`88 passed, 2 skipped` from pytest's last summary line, or a word for what went wrong."""
    for line in reversed(output.splitlines()):
        line = line.strip().strip("=").strip()
        if re.search(r"\bin [0-9.]+s\b", line) and re.search(
            r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b", line
        ):
            return re.sub(r"\s+in [0-9.]+s.*$", "", line)
    return "no pytest summary"


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
        except SystemExit as exc:
            log.write(f"{exc}\n")
            print(exc, file=sys.stderr)
            summary = f"matrix: gunicorn {args.version} on Python {PYTHON_VERSION}: venv not ready ({exc})"
            log.write(summary + "\n")
            print(summary)
            return 2
        line = f"matrix: gunicorn {found['gunicorn']} from {found['gunicorn_file']}; arbiter {found['arbiter_file']}"
        log.write(line + "\n")
        print(line, flush=True)
        env = clean_env(venv)
        for suite in suites:
            command = [
                venv / "bin" / "python",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--timeout={args.test_timeout:g}",
                *pytest_args,
                SUITES[suite],
            ]
            mark = log.tell()
            status = run(command, log, timeout=args.suite_timeout, env=env)
            log.flush()
            with open(log_path, errors="replace") as reread:
                reread.seek(mark)
                counts = pytest_counts(reread.read())
            if status == 124:
                counts += f", killed after {args.suite_timeout:g} s"
            elif status != 0 and "failed" not in counts and "error" not in counts:
                counts += f", pytest exit status {status}"
            results[suite] = counts
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
