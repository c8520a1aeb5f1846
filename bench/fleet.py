"""Fleet speed: a rolling upgrade of N lab hosts, one a batch, under full keep-alive load, staged and not.

    make bench-fleet HOSTS=10 [UNSTAGED_HOSTS=2]
    python bench/fleet.py --inventory INV [--bridge BR] [--bake 3] [--unstaged-hosts K]   (inside tests/lab/lab.py run)

Deploys release 1.0.0 of the example ASGI app to every host, times a deploy that changes nothing, then upgrades
the fleet one host at a time twice while a client sends to every host as fast as it is answered over kept-alive
connections: to 2.0.0 without staging (gunicorn_stage=false: each turn installs, then switches), and to 3.0.0
with staging (every host installs and checks the release at once, then each turn only switches). The phases
are read from the playbook's own progress lines (tests/demo/rollout.py keeps them with their times). It prints:

    noop_deploy_s=D
    unstaged: hosts=N serial=1 bake_s=B switch_s_max=X switch_s_median=M total_s=T requests=R failed=F
    fleet: hosts=N serial=1 bake_s=B stage_s=S switch_s_max=X total_s=T requests=R failed=F

stage_s runs from the start of the stage play to its "staged on k of N hosts" line; a host's switch_s from its
"host i of N" line to the next host's (the last one's to the next play); total_s is the whole playbook.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "demo"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "proof"))
import change_proof  # tests/proof/change_proof.py: the full-speed load client
import rollout  # tests/demo/rollout.py: the lab fleet and its playbook runner

REPO = rollout.REPO
CONNECTIONS_PER_HOST = 2  # kept-alive connections to each host, each sending as soon as it is answered
STAGE_PLAY = "PLAY [Stage the release on every target host]"


def phases(timeline: list[tuple[float, str]]) -> dict:
    """stage_s, switch_s (one per host turn, in order) and total_s from a playbook's timeline."""
    stage_start = next((t for t, text in timeline if text == STAGE_PLAY), None)
    stage_end = next((t for t, text in timeline if " staged on " in text), None)
    turns = [i for i, (_t, text) in enumerate(timeline) if ": host " in text and " of " in text]
    switch = []
    for position, index in enumerate(turns):
        start = timeline[index][0]
        if position + 1 < len(turns):
            end = timeline[turns[position + 1]][0]
        else:
            end = next(t for t, text in timeline[index + 1 :] if text.startswith("PLAY [") or text == "END")
        switch.append(end - start)
    return {
        "stage_s": None if stage_start is None or stage_end is None else stage_end - stage_start,
        "switch_s": switch,
        "total_s": timeline[-1][0] if timeline else None,
    }


def upgrade_under_load(
    fleet: rollout.Fleet, release: str, label: str, bake: float, stage: bool, hosts: list[str] | None = None
) -> tuple[dict, dict]:
    """Upgrade `hosts` (default: every host) while every host takes the load."""
    urls = [f"http://{address}:{rollout.PORT}/version" for address in fleet.hosts.values()]
    extra = [*rollout.release_vars(release), "-e", f"gunicorn_bake_seconds={bake}", "-e", "gunicorn_serial=1"]
    extra += ["-e", f"gunicorn_stage={'true' if stage else 'false'}"]
    if hosts is not None:
        extra += ["--limit", ",".join(hosts)]
    load = change_proof.FullLoad(fleet.out, label, urls, fleet.bridge, connections=CONNECTIONS_PER_HOST)
    with load, load.window():
        fleet.playbook("upgrade", *extra)
    report = load.report()
    served = {served for host, served in fleet.served().items() if hosts is None or host in hosts}
    if served != {release}:
        raise rollout.StepFailed(f"after the {label}, the fleet serves {sorted(served)}, not {release}")
    return phases(fleet.timeline), report


def fmt(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", type=Path, default=os.environ.get("LAB_INVENTORY"))
    parser.add_argument("--bridge", default=os.environ.get("LAB_BRIDGE"))
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-fleet")
    parser.add_argument("--wheelhouse", type=Path, default=REPO / "build" / "wheelhouse")
    parser.add_argument("--bake", type=float, default=3.0, help="gunicorn_bake_seconds")
    parser.add_argument(
        "--unstaged-hosts",
        type=int,
        default=int(os.environ.get("UNSTAGED_HOSTS") or 0),
        help="upgrade only this many hosts without staging (0: all); a turn that installs takes minutes under load",
    )
    args = parser.parse_args()
    if not args.inventory:
        parser.error("--inventory (or LAB_INVENTORY) is required")
    args.out.mkdir(parents=True, exist_ok=True)
    fleet = rollout.Fleet(args.inventory, args.out, args.wheelhouse, args.bridge)
    subprocess.run([sys.executable, str(REPO / "tests/lab/lab.py"), "check-route", *fleet.hosts.values()], check=True)
    hosts = len(fleet.hosts)
    try:
        rollout.deploy_v1(fleet)
        rollout.say("a deploy that changes nothing")
        started = time.monotonic()
        fleet.playbook("deploy", *rollout.release_vars("1.0.0"))
        noop_s = time.monotonic() - started

        rollout.say("upgrade to 2.0.0 without staging, one host at a time, under full load")
        unstaged_hosts = sorted(fleet.hosts)[: args.unstaged_hosts] if args.unstaged_hosts else None
        unstaged, unstaged_load = upgrade_under_load(
            fleet, "2.0.0", "unstaged-2.0.0", args.bake, stage=False, hosts=unstaged_hosts
        )
        rollout.say("upgrade to 3.0.0 with staging, one host at a time, under full load")
        staged, staged_load = upgrade_under_load(fleet, "3.0.0", "staged-3.0.0", args.bake, stage=True)
    except rollout.StepFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1

    print()
    print(f"noop_deploy_s={noop_s:.1f}")
    print(
        f"unstaged: hosts={len(unstaged['switch_s'])} serial=1 bake_s={args.bake:g} "
        f"switch_s_max={fmt(max(unstaged['switch_s']))} "
        f"switch_s_median={fmt(statistics.median(unstaged['switch_s']))} total_s={fmt(unstaged['total_s'])} "
        f"requests={unstaged_load['sent']} failed={unstaged_load['failed']}"
    )
    print(
        f"fleet: hosts={hosts} serial=1 bake_s={args.bake:g} stage_s={fmt(staged['stage_s'])} "
        f"switch_s_max={fmt(max(staged['switch_s']))} total_s={fmt(staged['total_s'])} "
        f"requests={staged_load['sent']} failed={staged_load['failed']}"
    )
    return 0 if unstaged_load["failed"] == 0 and staged_load["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
