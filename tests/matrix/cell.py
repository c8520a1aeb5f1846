"""What the matrix cells (ansible_core_cell.py and gunicorn_cell.py) share: timed steps, clean environments, and
the venv each cell builds under build/matrix, stamps, and checks before use.

- run(): one step (a command) in its own process group, its output teed to the cell's log and to stdout. Past
  its wall-clock limit the whole group gets SIGTERM, then SIGKILL ten seconds later; the step's status is then
  TIMED_OUT (124) and the log and stdout say "matrix: <step> killed after its <N> s limit". When the step ends,
  whatever it left running in its group (a master a test started) is killed with it.
- clean_env(): this environment without a virtualenv's or Python's own settings, and with a venv's bin first
  on PATH when one is given.
- build_or_reuse_venv(), probe(), outside_venv() and accept_venv(): a cell's venv is built again unless the
  stamp it was built with (<venv>/.cell-stamp.json: what the cell builds it from) matches; the probe asks the
  venv's python what it imports and from where; the stamp is written only once the cell's checks of the probe
  find nothing wrong, and removed when they do (so the next run builds the venv again).
- run_pytest() and pytest_counts(): a pytest step and the counts the cell's summary line gives for it.

What each cell builds, probes for, checks and runs stays in its script.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MATRIX = REPO / "build" / "matrix"
# A step's status when its wall-clock limit killed it (as timeout(1) exits).
TIMED_OUT = 124
# How long a step has between SIGTERM and SIGKILL once past its limit.
GRACE_SECONDS = 10
STAMP_NAME = ".cell-stamp.json"
PYTHON_SETTINGS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
REQUIREMENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CellError(Exception):
    """The cell cannot run: its venv could not be made or is not what it should be (exit status 2)."""


def canonical(name: str) -> str:
    """A package name as pip compares them: lower case, runs of -, _ and . as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> dict[str, str]:
    """{canonical name: the requirement as written} for each requirement line of a requirements file."""
    found = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        name = REQUIREMENT_NAME_RE.match(line)
        if name:
            found[canonical(name.group())] = line
    return found


def python_version(python: str) -> str | None:
    """The full version of the interpreter, or None when it does not run (a pyenv shim without that version does
    not) or cannot make a venv."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys, venv, ensurepip; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def clean_env(venv: Path | None = None, *, drop: Iterable[str] = (), venv_settings: dict | None = None) -> dict:
    """This environment without PYTHON_SETTINGS and drop, pip's version check off; with venv, that venv active
    (VIRTUAL_ENV, its bin first on PATH) and venv_settings set."""
    unset = {*PYTHON_SETTINGS, *drop}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(venv_settings or {})
    return env


def signal_group(pid: int, sig: int) -> None:
    """Send sig to the process group pid leads; a group already gone is no error."""
    with contextlib.suppress(OSError):
        os.killpg(pid, sig)


def run(
    command: Sequence,
    log,
    timeout: float,
    env: dict | None = None,
    cwd: Path = REPO,
    echo: bool = True,
    name: str | None = None,
) -> int:
    """Run command in its own process group, its output streamed to the log (and stdout when echo); kill the group
    past timeout seconds (TIMED_OUT, said as "<name> killed after its <timeout> s limit", name by default the
    program's) and when the command ends. Returns the command's exit status."""
    log.write(f"$ {' '.join(map(str, command))}\n")
    log.flush()
    proc = subprocess.Popen(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    deadline = time.monotonic() + timeout
    timed_out = threading.Event()

    def watchdog():
        while proc.poll() is None:
            if time.monotonic() > deadline:
                timed_out.set()
                signal_group(proc.pid, signal.SIGTERM)
                for _second in range(GRACE_SECONDS):
                    if proc.poll() is not None:
                        break
                    time.sleep(1)
                signal_group(proc.pid, signal.SIGKILL)
                return
            time.sleep(1)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        for line in proc.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
        proc.wait()
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        raise
    finally:
        # Whatever the step left running in its group (a master a test started) goes with it.
        signal_group(proc.pid, signal.SIGKILL)
    log.flush()
    if timed_out.is_set():
        message = f"matrix: {name or Path(str(command[0])).name} killed after its {timeout:g} s limit\n"
        log.write(message)
        sys.stdout.write(message)
        return TIMED_OUT
    return proc.returncode


def read_stamp(venv: Path) -> dict:
    """What the venv was built from, as its stamp says; {} when there is none."""
    try:
        return json.loads((venv / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}


def build_or_reuse_venv(
    venv: Path,
    python: str,
    requirements: Path | Sequence[str],
    wanted: dict,
    log,
    env: dict,
    *,
    rebuild: bool,
    detail: str,
    package_keys: Iterable[str] | None = None,
) -> dict:
    """The venv as the stamp wanted describes it: kept when its stamp matches wanted on package_keys (every key of
    wanted when None) and its python is there, else made afresh from python and the requirements pip-installed
    (a requirements file, or lines written to <venv>/requirements.txt), env being the venv's environment.
    detail goes in the "building" line. Returns the stamp the venv had ({} when it was built again); raises
    CellError when a step fails."""
    stamp = read_stamp(venv)
    keys = list(wanted if package_keys is None else package_keys)
    if not rebuild and all(stamp.get(k) == wanted[k] for k in keys) and (venv / "bin" / "python").exists():
        return stamp
    where = venv.relative_to(REPO)
    log.write(f"matrix: building {where}\n")
    print(f"matrix: building {where} ({detail})", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    venv.mkdir(parents=True)
    if not isinstance(requirements, Path):
        requirements_file = venv / "requirements.txt"
        requirements_file.write_text("".join(f"{line}\n" for line in requirements))
        requirements = requirements_file
    steps = [
        ([python, "-m", "venv", venv], clean_env()),
        ([venv / "bin" / "python", "-m", "pip", "install", "-q", "-r", requirements], env),
    ]
    for step, step_env in steps:
        if run(step, log, timeout=900, env=step_env, echo=False):
            raise CellError(f"could not build {where} (see the log)")
    return {}


def probe(venv: Path, code: str, what: str, env: dict) -> dict:
    """The JSON object code prints when the venv's python runs it isolated (-I, from /); CellError naming what the
    venv should import when it fails."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",
        check=False,
    )
    if out.returncode:
        raise CellError(f"the venv {venv.relative_to(REPO)} does not import {what}:\n{out.stderr}")
    return json.loads(out.stdout)


def outside_venv(venv: Path, found: dict, modules: dict[str, str]) -> list[str]:
    """A problem for each of modules ({what: the probe's key for its file}) that imports from outside the venv."""
    site = os.path.realpath(venv) + os.sep
    return [
        f"{what} imports from {found[key]}, outside the venv"
        for what, key in modules.items()
        if not os.path.realpath(found[key]).startswith(site)
    ]


def accept_venv(venv: Path, wanted: dict, problems: list[str]) -> None:
    """Stamp the venv with wanted when the cell's checks found no problem; else remove its stamp (the next run
    builds it again) and raise CellError with the problems."""
    stamp_path = venv / STAMP_NAME
    if problems:
        stamp_path.unlink(missing_ok=True)
        raise CellError(f"{venv.relative_to(REPO)}: " + "; ".join(problems))
    stamp_path.write_text(json.dumps(wanted, indent=1) + "\n")


def pytest_counts(output: str) -> str:
    """`412 passed, 2 skipped` from pytest's last summary line, or a word for what went wrong."""
    for line in reversed(output.splitlines()):
        line = line.strip().strip("=").strip()
        if re.search(r"\bin [0-9.]+s\b", line) and re.search(
            r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b", line
        ):
            return re.sub(r"\s+in [0-9.]+s.*$", "", line)
    return "no pytest summary"


def run_pytest(
    venv: Path,
    paths: Sequence,
    pytest_args: Sequence[str],
    test_timeout: float,
    timeout: float,
    log,
    log_path: Path,
    env: dict,
    name: str | None = None,
) -> tuple[int, str]:
    """The venv's pytest on paths (each test bounded by test_timeout, the whole by timeout), its output in the log
    at log_path. Returns its exit status and its counts for the summary line, with the limit or the exit status
    where pytest's own summary does not tell why it failed."""
    command = [
        venv / "bin" / "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--timeout={test_timeout:g}",
        *pytest_args,
        *paths,
    ]
    mark = log.tell()
    status = run(command, log, timeout=timeout, env=env, name=name)
    with open(log_path, errors="replace") as reread:
        reread.seek(mark)
        counts = pytest_counts(reread.read())
    if status == TIMED_OUT:
        counts += f", killed after {timeout:g} s"
    elif status and "failed" not in counts and "error" not in counts:
        counts += f", pytest exit status {status}"
    return status, counts
