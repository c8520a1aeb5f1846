"""The support matrix, run: every cell the README's support matrix names beyond what make test covers.

    run.py [--logs build/matrix/logs] [--only NAME ...] [--list]

Cells run in lanes side by side: the ansible-core cells keep a core busy, the gunicorn cells mostly wait on
masters on loopback, and the host cells mostly wait on test hosts. Within a lane, cells run one after
another, and a failed cell does not stop the ones after it. Each cell's log goes to the logs folder; the
end is a table of every cell, its result and its time. The exit status is 0 only when every cell passed.

The cells:
- ansible-core 2.17, 2.18, 2.19 and 2.20: the unit tests and ansible-test sanity (ansible_core_cell.py), and
  under 2.17 the rollout drill on three bookworm hosts (tests/demo/rollout.py quick);
- gunicorn 25.1, 26.2 and 27.0: the arbiter's unit and integration tests on loopback (gunicorn_cell.py);
- Debian bullseye and trixie hosts: the molecule default scenario, and the SIGUSR2 hand-over and socket
  activation under systemd (arbiter/tests/systemd);
- a mixed fleet, one host of each release: the rolling-upgrade proof under load (tests/demo/rollout.py proof).

On SIGINT or SIGTERM the running cells are stopped by their process groups; the labs tear themselves down.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests/lab"))
from lab import DEFAULT_RELEASE, RELEASES  # noqa: E402
from side_by_side import start, stop  # noqa: E402

PY = sys.executable
LAB = [PY, str(REPO / "tests/lab/lab.py")]
ANSIBLE_CORE = ["2.17", "2.18", "2.19", "2.20"]
GUNICORN = ["25.1.0", "26.2.0", "27.0.1"]
# make test boots the default release everywhere: the matrix boots the others.
OTHER_RELEASES = [r for r in RELEASES if r != DEFAULT_RELEASE]


class Cell(NamedTuple):
    name: str
    argv: list[str]
    env: dict[str, str] = {}
    boots_hosts: bool = False


def cells() -> dict[str, list[Cell]]:
    """The lanes, each a list of cells run one after another."""
    ansible = [
        Cell(f"ansible-core {v}", [PY, str(REPO / "tests/matrix/ansible_core_cell.py"), v]) for v in ANSIBLE_CORE
    ]
    # The playbooks themselves under the oldest ansible-core claimed (make test runs them under the newest pinned),
    # with the venv its cell above made: the rollout drill of the molecule rollout scenario, on three hosts.
    oldest = ANSIBLE_CORE[0]
    drill = [*LAB, "run", "--name", "oldcore", "--hosts", "3", "--release", DEFAULT_RELEASE, "--"]
    drill += [PY, str(REPO / "tests/demo/rollout.py"), "quick", "--out", str(REPO / f"build/matrix/rollout-{oldest}")]
    drill += ["--ansible-bin", str(oldest_ansible_bin())]
    ansible.insert(1, Cell(f"rolling upgrade under load with ansible-core {oldest}", drill, boots_hosts=True))
    gunicorn = [Cell(f"gunicorn {v}", [PY, str(REPO / "tests/matrix/gunicorn_cell.py"), v]) for v in GUNICORN]
    hosts = []
    for release in OTHER_RELEASES:
        env = {"LAB_RELEASE": release, "LAB_APP_PYTHON": RELEASES[release]["app_python"]}
        molecule = ["bash", str(REPO / "tests/molecule_scenarios.sh"), "default"]
        hosts.append(Cell(f"molecule default on {release}", molecule, env, boots_hosts=True))
        usr2 = [
            PY,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout=900",
            str(REPO / "arbiter/tests/systemd"),
        ]
        gunicorn.append(Cell(f"SIGUSR2 hand-over and socket activation on {release}", usr2, env, boots_hosts=True))
    mixed = ",".join(RELEASES)
    rollout = [*LAB, "run", "--name", "mixed", "--hosts", str(len(RELEASES)), "--release", mixed, "--"]
    rollout += [PY, str(REPO / "tests/demo/rollout.py"), "proof", "--out", str(REPO / "build/matrix/mixed-rollout")]
    hosts.append(Cell(f"rolling upgrade under load on {mixed}", rollout, boots_hosts=True))
    return {"ansible-core": ansible, "gunicorn and systemd": gunicorn, "hosts": hosts}


def oldest_ansible_bin() -> Path:
    return REPO / f"build/matrix/ansible-core-{ANSIBLE_CORE[0]}/bin"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, default=REPO / "build/matrix/logs")
    parser.add_argument("--only", action="append", default=[], help="run the cells whose name contains this")
    parser.add_argument("--list", action="store_true", help="print the cells and exit")
    parser.add_argument("--cell-minutes", type=int, default=40, help="the most one cell may take")
    args = parser.parse_args()
    lanes = {
        name: [cell for cell in lane if not args.only or any(part in cell.name for part in args.only)]
        for name, lane in cells().items()
    }
    if args.list:
        for name, lane in lanes.items():
            print(f"{name}: " + "; ".join(cell.name for cell in lane))
        return 0
    selected = [cell for lane in lanes.values() for cell in lane]
    drill_alone = any("with ansible-core" in c.name for c in selected) and not any(
        c.name == f"ansible-core {ANSIBLE_CORE[0]}" for c in selected
    )
    if drill_alone and not (oldest_ansible_bin() / "ansible-playbook").exists():
        parser.error(f"the drill needs the venv its ansible-core {ANSIBLE_CORE[0]} cell builds: select that cell too")
    args.logs.mkdir(parents=True, exist_ok=True)
    if any(cell.boots_hosts for cell in selected):
        # Each release's root filesystem, before any cell boots hosts (bullseye's builds a Python: once, ~10 min).
        subprocess.run([*LAB, "rootfs", "--release", ",".join(RELEASES)], check=True, timeout=3600)

    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    results: list[tuple[str, int, float]] = []
    running: dict[str, tuple[str, subprocess.Popen, float, Path]] = {}
    # A lane is never held longer than this by one cell: past it, the cell is stopped and counted as failed.
    cell_limit = args.cell_minutes * 60
    queues = {name: list(lane) for name, lane in lanes.items() if lane}
    began = time.monotonic()
    try:
        while queues or running:
            for lane_name in list(queues):
                if lane_name in running:
                    continue
                cell_name, argv, env, _boots = queues[lane_name].pop(0)
                if not queues[lane_name]:
                    del queues[lane_name]
                log_path = args.logs / (cell_name.replace(" ", "-").replace(",", "-") + ".log")
                process = start(argv, log_path, env={**os.environ, **env})
                running[lane_name] = (cell_name, process, time.monotonic(), log_path)
                print(f"matrix: started {cell_name} (log {log_path})", flush=True)
            for lane_name, (cell_name, process, started, log_path) in list(running.items()):
                status = process.poll()
                if status is None and time.monotonic() - started > cell_limit:
                    print(f"matrix: {cell_name}: over its {args.cell_minutes} minutes; stopping it", flush=True)
                    stop(process)
                    status = 124
                if status is None:
                    continue
                del running[lane_name]
                seconds = time.monotonic() - started
                results.append((cell_name, status, seconds))
                print(
                    f"matrix: {cell_name}: {'passed' if status == 0 else f'FAILED (exit {status})'} in {seconds:.0f} s"
                )
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                print(f"    {tail[0]}", flush=True)
            time.sleep(1)
    finally:
        for _name, process, _started, _log in running.values():
            stop(process)
    print(f"\nmatrix: {len(results)} cells in {time.monotonic() - began:.0f} s")
    for cell_name, status, seconds in results:
        print(f"| {cell_name} | {'passed' if status == 0 else 'FAILED'} | {seconds:.0f} s |")
    return 0 if results and all(status == 0 for _n, status, _s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
