"""Rolling upgrades of the example ASGI app on the lab's hosts, under a bounded load, with a report.

    rollout.py demo  --inventory INV   v1 deployed, then upgraded to v2 host by host under load;
                                        prints the load report and the fleet's status, draws the chart
    rollout.py quick --inventory INV   the same, with a migration run once before the first switch and once
                                        after the rollout; then a v3 that fails to import on the second host
                                        only (staging stops the rollout before any host switches), and a v3
                                        whose migration fails (no host switches); asserts each outcome (the
                                        molecule `rollout` scenario, in make test)
    rollout.py proof --inventory INV   quick, then a v3 that only fails its health check on the second
                                        host (that host rolls back by itself, the rollout stops, the third
                                        host stays), then a rollback of the fleet to v1 (make rollout-proof)

Run inside `tests/lab/lab.py run` (or molecule), which boots the hosts; the load goes only to their
addresses, after checking each route goes through the lab's bridge (LAB_BRIDGE).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOADGEN = REPO / "tests" / "load" / "loadgen.py"
DEMO_VARS = REPO / "tests" / "demo" / "vars.yml"
# The collection's example run-once task file (examples/ is where run-once tasks may live by default).
MIGRATE_TASKS = REPO / "examples" / "run_once" / "migrate.yml"
# The "migration": run as the service user in the release being rolled out, it records which release it imported
# and what `current` named at that moment, in a file named after the run-once phase.
MIGRATION = (
    "import json, os, sys, time, graceful_demo_asgi as app; "
    "mark = {'version': app.__version__, 'current': os.readlink('/srv/gunicorn/demo/current'), 'at': time.time()}; "
    "json.dump(mark, open('/tmp/graceful-hook-%s.json' % sys.argv[1], 'w'))"
)
# Where ansible-playbook and its siblings are: this venv's, or another ansible-core's (--ansible-bin).
BIN = Path(sys.executable).parent
INSTANCE = "demo"
PORT = 8000


class StepFailed(AssertionError):
    pass


# The rollout playbooks' progress messages, as the default callback prints them (JSON or YAML results).
PROGRESS_RE = re.compile(
    r"""msg['"]?:\s*['"]?(?P<msg>\S+( \S+)?: (staged on \d+ of \d+ hosts|host \d+ of \d+ )[^'"]*)"""
)


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


class Fleet:
    def __init__(self, inventory: Path, out: Path, wheelhouse: Path, bridge: str | None):
        self.inventory = inventory
        self.out = out
        self.wheelhouse = wheelhouse
        self.bridge = bridge
        self.timeline: list[tuple[float, str]] = []
        listing = json.loads(
            subprocess.run(
                [BIN / "ansible-inventory", "-i", str(inventory), "--list"], check=True, capture_output=True, text=True
            ).stdout
        )
        hostvars = listing["_meta"]["hostvars"]
        self.hosts = {name: hostvars[name].get("ansible_host", name) for name in sorted(hostvars)}

    def playbook(self, name: str, *extra: str, expect_failure: bool = False) -> subprocess.CompletedProcess:
        cmd = [
            str(BIN / "ansible-playbook"), "-i", str(self.inventory), f"graceful.gunicorn.{name}",
            "-e", f"@{DEMO_VARS}", "-e", f"gunicorn_wheelhouse={self.wheelhouse}", *extra,
        ]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        log = self.out / f"{name}-{int(time.time())}.log"
        started = time.monotonic()
        # (seconds since the start, text) of each play and progress line, for whoever times the phases.
        self.timeline = []
        # The log gets everything; the terminal gets the playbook's progress lines as they come (how far staging
        # got, whose turn it is), with the seconds since the start.
        with (
            log.open("w") as handle,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
        ):
            for line in proc.stdout:
                handle.write(line)
                progress = PROGRESS_RE.search(line)
                if progress:
                    print(f"  [{time.monotonic() - started:5.0f} s] {progress.group('msg')}", flush=True)
                    self.timeline.append((time.monotonic() - started, progress.group("msg")))
                elif line.startswith("PLAY [") and not line.startswith("PLAY RECAP"):
                    self.timeline.append((time.monotonic() - started, line.strip(" *\n")))
        self.timeline.append((time.monotonic() - started, "END"))
        result = subprocess.CompletedProcess(cmd, proc.returncode)
        tail = log.read_text().splitlines()[-25:]
        if (result.returncode != 0) != expect_failure:
            print("\n".join(tail))
            raise StepFailed(f"ansible-playbook {name} exited {result.returncode} (log: {log})")
        print("\n".join(line for line in tail if line.strip()), flush=True)
        return result

    def ad_hoc(self, module: str, args: str, *, check: bool = False) -> dict:
        """An ad-hoc run of `module` on every host: {host: its JSON result}, for the hosts that gave one."""
        tree = self.out / f"ad-hoc-{time.monotonic_ns()}"
        subprocess.run(
            [str(BIN / "ansible"), "-i", str(self.inventory), "gunicorn_hosts", "-m", module, "-a", args,
             "--tree", str(tree)],
            capture_output=True, text=True, check=check,
        )  # fmt: skip
        return {host: json.loads((tree / host).read_text()) for host in self.hosts if (tree / host).exists()}

    def info(self) -> dict:
        """gunicorn_info on every host: {host: result}."""
        return self.ad_hoc("graceful.gunicorn.gunicorn_info", f"instance={INSTANCE}")

    def read(self, path: str) -> dict:
        """The file at `path` on every host that has it: {host: text}."""
        results = self.ad_hoc("ansible.builtin.slurp", f"src={path}")
        return {host: base64.b64decode(r["content"]).decode() for host, r in results.items() if "content" in r}

    def forget(self, path: str) -> None:
        self.ad_hoc("ansible.builtin.file", f"path={path} state=absent", check=True)

    def served(self) -> dict:
        versions = {}
        for name, address in self.hosts.items():
            with urllib.request.urlopen(f"http://{address}:{PORT}/version", timeout=5) as response:
                versions[name] = json.load(response)["version"]
        return versions

    def load(self, label: str, seconds: float) -> Load:
        return Load(self, label, seconds)


class Load:
    """loadgen.py in the background against every host, stopped by a stop file, bounded in time."""

    def __init__(self, fleet: Fleet, label: str, seconds: float):
        self.fleet = fleet
        self.records = fleet.out / f"load-{label}.jsonl"
        self.marks = fleet.out / f"marks-{label}.json"
        self.stop_file = fleet.out / f"stop-{label}"
        self.seconds = seconds
        self.proc = None
        self.during = None

    def __enter__(self) -> Load:
        self.stop_file.unlink(missing_ok=True)
        urls = []
        for address in self.fleet.hosts.values():
            urls += ["--url", f"http://{address}:{PORT}/version"]
        cmd = [sys.executable, str(LOADGEN), "run", *urls, "--out", str(self.records), "--connections", "2",
               "--rate", "40", "--seconds", str(self.seconds), "--stop-file", str(self.stop_file)]  # fmt: skip
        if self.fleet.bridge:
            cmd += ["--bridge", self.fleet.bridge]
        self.proc = subprocess.Popen(cmd)
        time.sleep(3)  # a baseline before the action
        return self

    def action(self) -> _Window:
        return _Window(self)

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            time.sleep(3)  # and after it
            self.stop_file.touch()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(timeout=10)
        self.marks.write_text(json.dumps({"during": self.during}))

    def report(self, chart: Path | None = None) -> dict:
        summary_file = self.fleet.out / f"{self.records.stem}-summary.json"
        cmd = [sys.executable, str(LOADGEN), "report", str(self.records), "--marks", str(self.marks),
               "--json", str(summary_file)]  # fmt: skip
        if chart:
            cmd += ["--chart", str(chart)]
        subprocess.run(cmd, check=True)
        return json.loads(summary_file.read_text())


class _Window:
    def __init__(self, load: Load):
        self.load = load

    def __enter__(self):
        self.start = time.time()

    def __exit__(self, *exc):
        self.load.during = [self.start, time.time()]


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)
    print(f"  ok: {message}")


def release_vars(release: str) -> list[str]:
    pinned = {"gunicorn_release": release, "gunicorn_app_packages": [f"graceful-demo-asgi=={release}"]}
    return ["-e", json.dumps(pinned)]


def deploy_v1(fleet: Fleet) -> None:
    say("deploy release 1.0.0 to every host")
    fleet.playbook("deploy", *release_vars("1.0.0"))
    check(set(fleet.served().values()) == {"1.0.0"}, "every host serves 1.0.0")


def upgrade(fleet: Fleet, release: str, label: str, *, expect_failure=False, chart=None, playbook="upgrade", extra=()):
    summary_path = fleet.out / f"summary-{label}.json"
    before = fleet.info()
    with fleet.load(label, seconds=600) as load, load.action():
        extra = ["-e", f"gunicorn_summary_file={summary_path}", "-e", "gunicorn_bake_seconds=3", *extra]
        if playbook == "upgrade":
            extra += release_vars(release)
        else:
            extra += ["-e", f"gunicorn_rollback_release={release}"]
        fleet.playbook(playbook, *extra, expect_failure=expect_failure)
    say(f"load during the {label}")
    report = load.report(chart)
    after = fleet.info()
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return before, after, report, summary


def masters(info: dict) -> dict:
    return {host: r.get("master", {}).get("pid") for host, r in info.items()}


def check_units(info: dict) -> None:
    for host, r in info.items():
        unit = r.get("unit") or {}
        check(unit.get("active_state") == "active", f"{host}: unit active")
        check(unit.get("main_pid") == r["master"]["pid"], f"{host}: MainPID {unit.get('main_pid')} is the master")


def demo(fleet: Fleet) -> None:
    deploy_v1(fleet)
    say("rolling upgrade to 2.0.0, one host at a time, under load")
    chart = fleet.out / "latency.png"
    _before, after, report, _summary = upgrade(fleet, "2.0.0", "upgrade-2.0.0", chart=chart)
    say("fleet status")
    fleet.playbook("status")
    print(f"\nlatency chart: {chart}\nrequests: {report['sent']}, failed: {report['failed']}")
    if report["failed"] or set(fleet.served().values()) != {"2.0.0"}:
        raise StepFailed("the demo's upgrade failed requests or left a host behind")
    del after


def break_release_on(fleet: Fleet, host: str, release: str, how: str = "DEMO_BROKEN_VERSIONS") -> None:
    """Make `release` fail on one host only, through that host's environment (host_vars): to import with
    DEMO_BROKEN_VERSIONS, or only its health check with DEMO_UNHEALTHY_VERSIONS."""
    host_vars = fleet.inventory.parent / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{host}.yml").write_text(f"gunicorn_environment:\n  {how}: '{release}'\n")


def migration_vars(program: str) -> list[str]:
    """The example run-once task file before the first switch and after the rollout, running `program`."""
    argv = ["python", "-c", program, "{{ gunicorn_hook_phase }}"]
    return [
        "-e", json.dumps({"gunicorn_before_switch_tasks": str(MIGRATE_TASKS),
                          "gunicorn_after_rollout_tasks": str(MIGRATE_TASKS), "gunicorn_migrate_argv": argv}),
    ]  # fmt: skip


def upgrade_to_v2(fleet: Fleet, names: list[str]) -> None:
    say("upgrade to 2.0.0 one host per batch under load, with a migration before and after: no request fails")
    for phase in ("before_switch", "after_rollout"):
        fleet.forget(f"/tmp/graceful-hook-{phase}.json")
    before, after, report, summary = upgrade(
        fleet, "2.0.0", "upgrade-2.0.0", chart=fleet.out / "latency-2.0.0.png", extra=migration_vars(MIGRATION)
    )
    check(report["failed"] == 0, f"0 of {report['sent']} requests failed")
    check(set(fleet.served().values()) == {"2.0.0"}, "every host serves 2.0.0")
    check(all(masters(before)[h] != masters(after)[h] for h in names), "every master PID changed")
    check_units(after)
    check(summary["ok"] and {h["status"] for h in summary["hosts"].values()} == {"upgraded"}, "summary: all upgraded")
    marks = {phase: fleet.read(f"/tmp/graceful-hook-{phase}.json") for phase in ("before_switch", "after_rollout")}
    before_switch, after_rollout = (
        {host: json.loads(text) for host, text in marks[phase].items()} for phase in ("before_switch", "after_rollout")
    )
    check(
        list(before_switch) == [names[0]], f"the migration before the switch ran once, on {names[0]}: {before_switch}"
    )
    mark = before_switch[names[0]]
    check(
        mark["version"] == "2.0.0" and mark["current"].endswith("/releases/1.0.0"),
        f"it ran the new release's code while every host still served the old one: {mark}",
    )
    check(list(after_rollout) == [names[0]], f"the task file after the rollout ran once, on {names[0]}")
    check(after_rollout[names[0]]["current"].endswith("/releases/2.0.0"), "after the last switch")
    check(
        {phase: hook["status"] for phase, hook in summary["hooks"].items()}
        == {"before_switch": "ok", "after_rollout": "ok"},
        f"summary: both run-once task files passed: {summary['hooks']}",
    )


def migration_stops_v3(fleet: Fleet, names: list[str]) -> None:
    say("upgrade to 3.0.0 with a migration that fails: no host switches")
    failing = "import sys; sys.exit('the schema migration failed: ' + sys.argv[1])"
    before, after, report, summary = upgrade(
        fleet, "3.0.0", "migration-3.0.0", expect_failure=True, extra=migration_vars(failing)
    )
    check(report["failed"] == 0, f"0 of {report['sent']} requests failed")
    check(set(fleet.served().values()) == {"2.0.0"}, "every host still serves 2.0.0")
    check(masters(before) == masters(after), "no master changed")
    hosts, hooks = summary["hosts"], summary["hooks"]
    first = names[0]
    check(
        hosts[first]["status"] == "failed" and hosts[first]["failed_phase"] == "before_switch"
        and "the schema migration failed: before_switch" in hosts[first]["message"],
        f"summary: {first} failed before the switch: {hosts[first]}",
    )  # fmt: skip
    check(all(hosts[h]["status"] == "untouched" for h in names[1:]), "summary: the other hosts untouched")
    check(hooks["before_switch"]["status"] == "failed", f"summary: the migration failed: {hooks['before_switch']}")
    check(hooks["after_rollout"]["status"] == "not_run", f"summary: nothing ran after: {hooks['after_rollout']}")


def stage_stops_v3(fleet: Fleet, names: list[str]) -> None:
    say("upgrade to 3.0.0, which fails to import on the second host only: staging stops it before any switch")
    before, after, report, summary = upgrade(fleet, "3.0.0", "stage-3.0.0", expect_failure=True)
    first, second, third = names[:3]
    check(report["failed"] == 0, f"0 of {report['sent']} requests failed")
    check(set(fleet.served().values()) == {"2.0.0"}, "every host still serves 2.0.0")
    check(masters(before) == masters(after), "no master changed")
    hosts = summary["hosts"]
    check(hosts[second]["status"] == "failed" and hosts[second]["failed_phase"] == "stage", f"summary: {hosts[second]}")
    check(
        all(hosts[h]["status"] == "untouched" and "staged there" in hosts[h]["message"] for h in (first, third)),
        f"summary: {first} and {third} untouched, the release staged there",
    )


def quick(fleet: Fleet) -> None:
    """v1, v2 under load, and a v3 that staging stops before any host switches: the molecule `rollout` scenario."""
    names = list(fleet.hosts)
    break_release_on(fleet, names[1], "3.0.0")
    deploy_v1(fleet)
    upgrade_to_v2(fleet, names)
    stage_stops_v3(fleet, names)
    (fleet.inventory.parent / "host_vars" / f"{names[1]}.yml").unlink()
    migration_stops_v3(fleet, names)
    break_release_on(fleet, names[1], "3.0.0")


def proof(fleet: Fleet) -> None:
    """quick, then a v3 that only its health check catches, on one host, and a rollback of the fleet."""
    quick(fleet)
    names = list(fleet.hosts)
    first, second, third = names[:3]
    say("upgrade to 3.0.0, which imports but fails its health check on the second host only: it rolls back by itself")
    break_release_on(fleet, second, "3.0.0", how="DEMO_UNHEALTHY_VERSIONS")
    before, after, report, summary = upgrade(fleet, "3.0.0", "upgrade-3.0.0", expect_failure=True)
    check(report["failed"] == 0, f"0 of {report['sent']} requests failed")
    served = fleet.served()
    check(served == {first: "3.0.0", second: "2.0.0", third: "2.0.0"}, f"served releases {served}")
    check(masters(before)[second] == masters(after)[second], f"{second} kept its master")
    check(masters(before)[third] == masters(after)[third], f"{third} was not touched")
    check_units(after)
    hosts = summary["hosts"]
    check(hosts[second]["status"] == "rolled_back" and hosts[second].get("failed_phase"), f"summary: {hosts[second]}")
    check(hosts[third]["status"] in ("untouched", "skipped"), f"summary: {third} {hosts[third]['status']}")
    check(not summary["ok"], "summary: the rollout failed")

    say("rollback of the fleet to 1.0.0 under load")
    before, after, report, summary = upgrade(fleet, "1.0.0", "rollback-1.0.0", playbook="rollback")
    check(report["failed"] == 0, f"0 of {report['sent']} requests failed")
    check(set(fleet.served().values()) == {"1.0.0"}, "every host serves 1.0.0")
    check_units(after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["demo", "quick", "proof"])
    parser.add_argument("--inventory", type=Path, default=os.environ.get("LAB_INVENTORY"))
    parser.add_argument("--out", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--wheelhouse", type=Path, default=REPO / "build" / "wheelhouse")
    parser.add_argument("--bridge", default=os.environ.get("LAB_BRIDGE"))
    parser.add_argument("--ansible-bin", type=Path, help="run the playbooks with the ansible-core in this bin folder")
    args = parser.parse_args()
    if args.ansible_bin:
        global BIN  # one setting for the whole run, read by every playbook call
        BIN = args.ansible_bin
    if not args.inventory:
        parser.error("--inventory (or LAB_INVENTORY) is required")
    args.out.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(args.inventory, args.out, args.wheelhouse, args.bridge)
    subprocess.run([sys.executable, str(REPO / "tests/lab/lab.py"), "check-route", *fleet.hosts.values()], check=True)
    try:
        {"demo": demo, "quick": quick, "proof": proof}[args.scenario](fleet)
    except StepFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\n{args.scenario}: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
