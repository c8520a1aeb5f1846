"""Run independent test suites side by side and report each one's output in full, one after another.

    python tests/side_by_side.py --logs DIR -- "COMMAND ONE" "COMMAND TWO" ...

Each command is split like a shell word list (no shell runs it) and started in its own process group, with
its output going to DIR/<n>.log. A suite's log is printed as soon as it ends, so the output reads like the
suites ran in turn. The exit status is 0 when every suite passed, else the first failure's status.

Most of a lab suite's time is spent waiting on the test hosts (boots, SSH, pip, health gates), so two of
them on two cores take little longer than the longer one alone. On SIGINT or SIGTERM, or when this script
fails, every suite still running is stopped by its process group: nothing outlives the run.
"""

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def report(label: str, log_path: Path, status: int, seconds: float) -> None:
    print(f"==> {label}", flush=True)
    with log_path.open("rb") as log:
        sys.stdout.buffer.write(log.read())
    print(f"==> {label}: exit {status} after {seconds:.0f} s", flush=True)


def run(commands: list[str], logs: Path) -> int:
    logs.mkdir(parents=True, exist_ok=True)
    suites = []
    for index, text in enumerate(commands, start=1):
        argv = shlex.split(text)
        if not argv:
            raise SystemExit(f"side_by_side: command {index} is empty")
        log_path = logs / f"{index}.log"
        suites.append((text, log_path, start(argv, log_path), time.monotonic()))
        print(f"==> started: {text} (output in {log_path})", flush=True)

    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    first_failure = 0
    try:
        pending = list(suites)
        while pending:
            for suite in list(pending):
                text, log_path, process, started = suite
                status = process.poll()
                if status is None:
                    continue
                pending.remove(suite)
                report(text, log_path, status, time.monotonic() - started)
                if status != 0 and first_failure == 0:
                    first_failure = status if status > 0 else 128 - status
            time.sleep(1)
    finally:
        for _text, _log, process, _started in suites:
            stop(process)
    return first_failure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, required=True, help="directory for each suite's log")
    parser.add_argument("commands", nargs="+", help="one quoted command line per suite")
    args = parser.parse_args()
    return run(args.commands, args.logs)


if __name__ == "__main__":
    sys.exit(main())
