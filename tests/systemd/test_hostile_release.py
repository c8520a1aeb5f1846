"""The hostile drill release against the rollout playbooks, on a real systemd test host.

The instance runs the example WSGI app's release 9.0.0+hostile (examples/apps/wsgi/graceful_demo_wsgi/
hostile.py): its preloaded app, running as the service user inside the master, tries to steer the
root-run operations. Root starts a victim process on the host that looks like the instance's master by
its command line (a Python process with graceful-gunicorn and the instance's config in argv) and records
every signal it receives; the app learns its PID from a root-owned plan file. Then the reload, refresh,
rollback and upgrade playbooks run against the hostile master, each with a set of attacks armed. Each
must leave:

- the victim unsignalled: alive, same start time, no signal recorded, not stopped;
- nothing changed outside the instance's tree (/etc, /srv, /usr/local and /opt, by lstat and link
  target; the root-owned decoy link and file by content too), and `current` only ever naming an
  existing release directory under releases/ (watched on the host every 0.1 s during the operation);
- the old master serving (unit active, same MainPID, HTTP 200 on /health) when the operation failed,
  and then a failure that is a rollback or names what it refused (the victim's or a foreign PID, a
  planted path); or, when it succeeded, the master it promised (same for reload and refresh, one
  running 1.0.0 for upgrade and rollback).

Everything is real: systemd, gunicorn with the bundled arbiter, the playbooks over SSH, HTTP over the lab
bridge. HOSTILE_ROUNDS (comma-separated round names) and HOSTILE_ATTACKS (comma-separated attacks for
every round; "pidfile:foreign" aims the pidfile at a foreign master) narrow a run to find which attack
gets through. Boots its own test host with tests/lab/lab.py and always tears it down (HOSTILE_KEEP=1
leaves it up, HOSTILE_LAB=NAME reuses such a lab: see the host fixture).
"""

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests/lab/lab.py"
_lab_spec = importlib.util.spec_from_file_location("lab", LAB)
lab = importlib.util.module_from_spec(_lab_spec)
_lab_spec.loader.exec_module(lab)
WHEELHOUSE = ROOT / "build/wheelhouse"
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the test host is a systemd-nspawn container"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="needs systemd-nspawn (Debian: systemd-container)"),
]

INSTANCE = "hostile"
PORT = 8000
HOSTILE = "9.0.0+hostile"
GOOD = "1.0.0"
APP_ROOT = f"/srv/gunicorn/{INSTANCE}"
CURRENT = f"{APP_ROOT}/current"
CONFIG = f"/etc/gunicorn/{INSTANCE}/gunicorn.conf.py"
UNIT = f"gunicorn-{INSTANCE}.service"
RUNTIME = f"/run/gunicorn-{INSTANCE}"
DRILL = "/etc/graceful-drill"
PLAN = f"{DRILL}/hostile.json"
DECOY_LINK = f"{DRILL}/decoy-link"
DECOY_TARGET = f"{DRILL}/decoy-target"
DECOY_FILE = f"{DRILL}/decoy.conf"
RECORDS = "/var/lib/graceful-drill"
# Trees root's operations have no business changing; the instance's own tree is left out.
OUTSIDE = ["/etc", "/srv", "/usr/local", "/opt"]
INSIDE = [f"/etc/gunicorn/{INSTANCE}", APP_ROOT]

ROLE_VARS = {
    "gunicorn_instance": INSTANCE,
    "gunicorn_app": "graceful_demo_wsgi:app",
    "gunicorn_app_package": "graceful-demo-wsgi",
    "gunicorn_worker_class": "gthread",
    "gunicorn_workers": 2,
    "gunicorn_bind": f"0.0.0.0:{PORT}",
    "gunicorn_bake_seconds": 1,
    "gunicorn_health_timeout": 30,
}

# A master with two workers, as far as /proc can tell: every process of it records each signal it gets in
# the file VICTIM_LOG names, and ends on the ones that end a process by default. No '%' or '$' in it:
# systemd-run would expand them.
VICTIM_CODE = """
import os, signal, time
ENDING = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM}
def record(signum, frame):
    with open(os.environ["VICTIM_LOG"], "a") as log:
        log.write(str(os.getpid()) + " " + signal.Signals(signum).name + "\\n")
    if signum in ENDING:
        os._exit(128 + signum)
for sig in signal.valid_signals():
    if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        try:
            signal.signal(sig, record)
        except (OSError, ValueError):
            pass
for _ in range(2):
    if os.fork() == 0:
        break
time.sleep(900)
"""

# Each round: the playbook, its extra vars, the attacks armed, further plan settings (see hostile.py).
# An attack that makes an operation refuse early hides the ones after it, so they are spread over rounds.
ROUNDS = [
    pytest.param("reload", {}, ["pidfile", "symlinks", "foreign-master"], {}, id="reload"),
    pytest.param("refresh", {}, ["control-socket", "environ", "symlinks", "foreign-master"], {}, id="refresh"),
    # bake-fail answers only the share of the health checks its accept() wins: a longer bake lets it fail one.
    pytest.param(
        "rollback",
        {"gunicorn_rollback_release": GOOD, "gunicorn_bake_seconds": 5},
        ["environ", "symlinks", "foreign-master", "bake-fail"],
        {},
        id="rollback",
    ),
    pytest.param(
        "upgrade",
        {"gunicorn_release": GOOD},
        ["second-pidfile", "environ", "symlinks", "foreign-master"],
        {},
        id="upgrade",
    ),
    pytest.param(
        "upgrade", {"gunicorn_release": GOOD}, ["control-socket"], {"lies": ["reexec"]}, id="upgrade-reexec-lie"
    ),
]
_only = [name for name in os.environ.get("HOSTILE_ROUNDS", "").split(",") if name]
SELECTED = [r for r in ROUNDS if not _only or r.id in _only]


class Host:
    def __init__(self, lab_name: str, workdir: Path):
        self.lab_name = lab_name
        self.workdir = workdir
        self.state = ROOT / ".lab" / lab_name
        self.key = self.state / "id_ed25519"
        self.inventory = self.state / "inventory.yml"
        self.address = None
        self.name = None
        self.units = []

    def ssh(self, command: str, check: bool = True, input: str | None = None, timeout: int = 120) -> str:
        result = subprocess.run(
            [*lab.ssh_cmd(self.key, self.address), command],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} failed: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def playbook(self, name: str, extra: dict, log_name: str) -> tuple[int, dict | None, str]:
        """Run graceful.gunicorn.NAME; (exit code, its JSON summary or None, the log's path)."""
        summary = self.workdir / f"summary-{log_name}.json"
        summary.unlink(missing_ok=True)
        variables = dict(ROLE_VARS, gunicorn_wheelhouse=str(WHEELHOUSE), gunicorn_summary_file=str(summary), **extra)
        vars_file = self.workdir / f"vars-{log_name}.json"
        vars_file.write_text(json.dumps(variables))
        log = self.workdir / f"{log_name}.log"
        with log.open("w") as handle:
            rc = subprocess.call(
                [BIN / "ansible-playbook", "-i", self.inventory, f"graceful.gunicorn.{name}", "-e", f"@{vars_file}"],
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        return rc, (json.loads(summary.read_text()) if summary.exists() else None), str(log)

    def main_pid(self) -> int:
        return int(self.ssh(f"systemctl show -p MainPID --value {UNIT}") or 0)

    def health(self) -> int | None:
        """The status of GET /health from the controller, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.address}:{PORT}/health", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def run_unit(self, unit: str, argv: list[str], env: dict | None = None) -> int:
        """Start argv as root in a transient unit; its PID."""
        setenv = " ".join(f"-E {shlex.quote(f'{k}={v}')}" for k, v in (env or {}).items())
        self.ssh(f"systemd-run --quiet --collect --unit {unit} {setenv} {shlex.join(argv)}")
        self.units.append(unit)
        return wait_for(lambda: int(self.ssh(f"systemctl show -p MainPID --value {unit}") or 0), 20, f"{unit} up")

    def stop_units(self) -> None:
        for unit in self.units:
            self.ssh(f"systemctl stop {unit}", check=False)
        self.units = []

    def outside_state(self) -> list[str]:
        """lstat, link target and (for the decoys) content of everything outside the instance's tree."""
        prune = " -o ".join(f"-path {p}" for p in INSIDE)
        listing = self.ssh(
            f"find {' '.join(OUTSIDE)} -xdev \\( {prune} \\) -prune -o "
            "-printf '%p|%y|%m|%U|%G|%s|%T@|%C@|%i|%l\\n' | sort; "
            f"sha256sum {DECOY_FILE} /etc/passwd /etc/shadow /etc/sudoers",
            timeout=120,
        )
        return listing.splitlines()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (AssertionError, ValueError, OSError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def victim_state(host: Host, pid: int) -> list[str]:
    """PID, start time and whether it is stopped, of the victim and its children."""
    out = host.ssh(f"ps -o pid=,lstart=,s= -p {pid} --ppid {pid}", check=False)
    state = []
    for line in out.splitlines():
        *pid_and_start, letter = line.split()
        state.append(" ".join(pid_and_start) + (" stopped" if letter == "T" else ""))
    return sorted(state)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """One test host running the instance on the hostile release, with 1.0.0 finished before it.

    HOSTILE_LAB names a lab that is already up with the instance deployed (a run of this test with
    HOSTILE_KEEP=1 leaves its lab so): the setup is skipped and the lab is left up afterwards.
    """
    if not list(WHEELHOUSE.glob(f"graceful_demo_wsgi-{HOSTILE}-*.whl")):
        subprocess.run([sys.executable, ROOT / "tests/lab/build_wheelhouse.py"], check=True, timeout=900)
    reuse = os.environ.get("HOSTILE_LAB")
    name = reuse or f"hr{os.getpid() % 10000}"
    host = Host(name, tmp_path_factory.mktemp("hostile"))
    try:
        if not reuse:
            out = subprocess.run(
                [sys.executable, LAB, "up", "--name", name, "--hosts", "1"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if out.returncode != 0:
                pytest.fail(f"lab host did not boot: {out.stderr[-500:]}")
        inventory = host.inventory.read_text()
        host.address = re.search(r"ansible_host:\s*([\d.]+)", inventory).group(1)
        host.name = re.search(r"^\s{8}(\S+):\s*$", inventory, re.M).group(1)
        # Nothing is sent to the host (SSH, HTTP) unless its route goes through the lab's bridge.
        try:
            lab.Lab(name).check_route(host.address)
        except SystemExit as exc:
            pytest.fail(str(exc))
        for release, playbook in () if reuse else ((GOOD, "deploy"), (HOSTILE, "upgrade")):
            rc, _summary, log = host.playbook(playbook, {"gunicorn_release": release}, f"setup-{release}")
            if rc != 0:
                pytest.fail(f"could not {playbook} {release}: see {log}\n{Path(log).read_text()[-3000:]}")
        if not reuse:
            assert host.ssh(f"readlink {CURRENT}") == f"{APP_ROOT}/releases/{HOSTILE}"
        yield host
    finally:
        with contextlib.suppress(Exception):
            host.stop_units()
        if not reuse and not os.environ.get("HOSTILE_KEEP"):
            subprocess.run([sys.executable, LAB, "down", "--name", name], capture_output=True, timeout=300, check=False)


def reset(host: Host) -> int:
    """Attacks off, fresh decoys, `current` on the hostile release, a fresh master; returns its PID."""
    host.ssh(
        f"rm -rf {DRILL} {RECORDS} && mkdir -p -m 0755 {DRILL} {DECOY_TARGET} {RECORDS} && "
        f"echo 'root-owned decoy: nothing may change it' > {DECOY_FILE} && ln -s {DECOY_TARGET} {DECOY_LINK} && "
        f"ln -sfn {APP_ROOT}/releases/{HOSTILE} {CURRENT}.reset && mv -T {CURRENT}.reset {CURRENT} && "
        f"systemctl restart {UNIT}"
    )
    wait_for(lambda: host.health() == 200, 60, "the hostile release serving after a restart")
    return host.main_pid()


def arm(host: Host, attacks: list[str], victim: int, settings: dict) -> dict:
    manifest = json.loads(host.ssh(f"cat /etc/gunicorn/{INSTANCE}/instance.json"))
    plan = {
        **settings,
        "attacks": attacks,
        "victim_pid": victim,
        "decoy_link": DECOY_LINK,
        "decoy_file": DECOY_FILE,
        "pidfile": manifest.get("pidfile") or f"{RUNTIME}/master.pid",
        "control_socket": manifest.get("control_socket") or f"{RUNTIME}/gunicorn.ctl",
        "workers": ROLE_VARS["gunicorn_workers"],
    }
    host.ssh(f"cat > {PLAN}.new && chmod 0644 {PLAN}.new && mv {PLAN}.new {PLAN}", input=json.dumps(plan))
    master = host.main_pid()

    def armed():
        report = json.loads(host.ssh(f"cat {RUNTIME}/hostile.armed"))
        errors = {k: v for k, v in report["armed"].items() if str(v).startswith("error")}
        assert not errors, f"the hostile app could not arm {errors}"
        return report["armed"] if report["pid"] == master and set(report["armed"]) == set(attacks) else None

    return wait_for(armed, 30, f"the hostile master {master} to arm {attacks}")


def watch(host: Host, round_name: str) -> tuple[int, str]:
    """Record every value `current` and the decoy link take while the operation runs; (watcher PID, log)."""
    log = f"{RECORDS}/watch-{round_name}.log"
    script = (
        "last=; while :; do "
        f'now="$(readlink {CURRENT})|$(readlink {DECOY_LINK})"; '
        f'if [ "$now" != "$last" ]; then echo "$now" >> {log}; last=$now; fi; sleep 0.1; done'
    )
    pid = int(host.ssh(f"setsid /bin/bash -c {shlex.quote(script)} </dev/null >/dev/null 2>&1 & echo $!"))
    wait_for(lambda: host.ssh(f"cat {log}", check=False), 10, "the watcher's first record")
    return pid, log


def tokens_of(armed: dict, victim: int) -> list[str]:
    """What a refusal may name: the victim's and the foreign masters' PIDs, the planted and decoy paths."""
    pids = [victim, *(armed.get("foreign-master") or [])]
    paths = [DECOY_LINK, DECOY_FILE, f"{RUNTIME}/releases/evil", f"{RUNTIME}/current", f"{RUNTIME}/master.pid"]
    return [str(p) for p in pids] + paths


@pytest.mark.parametrize(("playbook", "extra", "attacks", "settings"), SELECTED)
def test_hostile_release(host, request, playbook, extra, attacks, settings):
    round_name = request.node.callspec.id
    override = [a for a in os.environ.get("HOSTILE_ATTACKS", "").split(",") if a]
    if override:
        settings = {"pidfile_target": "foreign" if "pidfile:foreign" in override else "victim"}
        attacks = [a.split(":")[0] for a in override]
    master = reset(host)
    victim_log = f"{RECORDS}/victim-{round_name}.signals"
    victim = host.run_unit(
        f"hostile-victim-{round_name}",
        ["/usr/bin/python3", "-c", VICTIM_CODE, "graceful-gunicorn", "-c", CONFIG, "graceful_demo_wsgi:app"],
        env={"VICTIM_LOG": victim_log},
    )
    victim_start = wait_for(lambda: len(victim_state(host, victim)) == 3 and victim_state(host, victim), 20, "victim")
    try:
        armed = arm(host, attacks, victim, settings)
        before = host.outside_state()
        watcher, watch_log = watch(host, round_name)
        try:
            rc, summary, log = host.playbook(playbook, extra, round_name)
        finally:
            host.ssh(f"kill {watcher}", check=False)
        seen = host.ssh(f"cat {watch_log}", check=False).splitlines()
        after = host.outside_state()

        problems = []
        # The victim: never signalled.
        signals = host.ssh(f"cat {victim_log} 2>/dev/null", check=False)
        now = victim_state(host, victim)
        if signals:
            problems.append(f"the victim {victim} was signalled: {signals.splitlines()}")
        if now != victim_start:
            problems.append(f"the victim {victim} or its children changed: {victim_start} before, {now} after")
        # Nothing outside the instance's tree changed; `current` only ever named a release.
        changed = sorted(set(before) ^ set(after))
        if changed:
            problems.append("changed outside the instance's tree:\n  " + "\n  ".join(changed[:20]))
        releases = set(host.ssh(f"find {APP_ROOT}/releases -mindepth 1 -maxdepth 1 -type d -printf '%f\\n'").split())
        if not seen:
            problems.append(f"the watcher recorded nothing in {watch_log}")
        for line in seen:
            current, _bar, decoy = line.partition("|")
            if current.rpartition("/")[0] != f"{APP_ROOT}/releases" or current.rpartition("/")[2] not in releases:
                problems.append(f"current named {current!r}, not a release under {APP_ROOT}/releases")
            if decoy != DECOY_TARGET:
                problems.append(f"the root-owned {DECOY_LINK} was pointed at {decoy!r}")
        # Serving: the old master when the operation failed, the promised one when it succeeded.
        status = host.health()
        if status != 200:
            problems.append(f"GET /health answered {status} after the {playbook}")
        active = host.ssh(f"systemctl is-active {UNIT}", check=False)
        if active != "active":
            problems.append(f"{UNIT} is {active} after the {playbook}")
        main_pid = host.main_pid()
        result = ((summary or {}).get("hosts") or {}).get(host.name) or {}
        if rc != 0:
            if main_pid != master:
                problems.append(f"the {playbook} failed but the master {master} was replaced by {main_pid}")
            # A refusal before acting must say what it refused; a failure while acting is the operation's own
            # (the drill's health attacks make some fail), with the old master serving as checked above.
            message = f"{result.get('failed_phase')}: {result.get('message')}"
            named = [t for t in tokens_of(armed, victim) if t in message]
            if str(result.get("failed_phase")).endswith("preflight") and not named:
                problems.append(f"the {playbook} refused without naming a PID or path of the attack: {message}")
        elif playbook in ("upgrade", "rollback"):
            release = host.ssh(f"readlink /proc/{main_pid}/cwd", check=False)
            if release != f"{APP_ROOT}/releases/{GOOD}":
                problems.append(f"the {playbook} succeeded but the master {main_pid} runs {release!r}, not {GOOD}")
        elif main_pid != master:
            problems.append(f"the {playbook} succeeded but replaced the master {master} with {main_pid}")

        print(f"{round_name}: attacks {armed}; exit {rc}; host result {result}")
        assert not problems, (
            f"{round_name} with attacks {sorted(armed)} (victim {victim}, exit {rc}, log {log}):\n- "
            + "\n- ".join(problems)
            + f"\nhost result: {result}\nlog tail:\n"
            + "\n".join(Path(log).read_text().splitlines()[-40:])
        )
    finally:
        host.ssh(f"rm -f {PLAN}", check=False)
        host.stop_units()
