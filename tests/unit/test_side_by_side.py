"""tests/side_by_side.py: suites run at once, each log is reported whole, a failure is the exit status."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "side_by_side.py"


def run_side_by_side(tmp_path, *commands, timeout=60):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--logs", str(tmp_path / "logs"), "--", *commands],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def py(tmp_path, name: str, code: str) -> str:
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    return f"{sys.executable} {script}"


def test_suites_overlap_and_each_log_is_reported_whole(tmp_path):
    marker = tmp_path / "first-started"
    # the second suite only ends once the first one has started: they must run at once
    first = py(
        tmp_path,
        "first",
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(1)\nprint('one a')\nprint('one b')\n",
    )
    second = py(
        tmp_path,
        "second",
        f"import pathlib, time\nwhile not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.05)\nprint('two')\n",
    )
    result = run_side_by_side(tmp_path, first, second)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "one a\none b\n" in out
    assert out.index("two") < out.index("one a"), "the suite that ended first is reported first"
    assert out.count(": exit 0 after") == 2


def test_a_failing_suite_fails_the_run_after_the_others_finish(tmp_path):
    done = tmp_path / "slow-done"
    slow = py(tmp_path, "slow", f"import pathlib, time\ntime.sleep(1)\npathlib.Path({str(done)!r}).touch()\n")
    failing = py(tmp_path, "failing", "import sys\nprint('broken')\nsys.exit(3)\n")
    result = run_side_by_side(tmp_path, failing, slow)
    assert result.returncode == 3
    assert done.exists(), "the other suite ran to its end"
    assert "broken" in result.stdout
    assert ": exit 3 after" in result.stdout


def test_sigterm_stops_every_suite_by_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    # a suite whose own child would outlive it if only the suite's process were killed
    suite = py(
        tmp_path,
        "parent",
        "import subprocess, sys, time, pathlib\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "time.sleep(120)\n",
    )
    runner = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--logs", str(tmp_path / "logs"), "--", suite],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the suite never started its child"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=40) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and _state(child) != "Z":
            assert time.monotonic() < deadline, f"the suite's child {child} outlived the run"
            time.sleep(0.05)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if pid_file.exists():
            child = int(pid_file.read_text())
            if Path(f"/proc/{child}").exists():
                os.kill(child, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "gone"


def test_an_empty_command_is_refused(tmp_path):
    result = run_side_by_side(tmp_path, "  ")
    assert result.returncode != 0
    assert "command 1 is empty" in result.stderr
