"""Every kind of change, made through the deploy playbook under full-speed keep-alive load: what ran, what failed.

    change_proof.py [--inventory INV] [--out DIR] [--wheelhouse DIR] [--bridge BRIDGE] [--kinds KIND,...]

Run inside `tests/lab/lab.py run --hosts 1` (`make change-proof`), which boots the host and tears it down.
The example WSGI app (gthread, 4 workers of 2 threads, keep-alive) is deployed once with
gunicorn_socket_activation false (true when --kinds leaves out socket-activation, the change that adopts it,
so that the later changes are made to a socket-activated instance as in the full run); then each change is
made as a user makes it: one role variable changed in the deploy's vars file (CHANGE_VARS, written 0600
because it holds a secret), then `ansible-playbook graceful.gunicorn.deploy -e @<vars file>`. Each deploy runs
under load from tests/load/loadgen.py: CONNECTIONS kept-alive connections sending as fast as they are
answered, from a few seconds before the deploy to a few seconds after it, bounded in seconds and requests. One
line per change:

    change=<kind> action=<what ran on the host> requests=<n> failed=<n> p99_ms=<x> retried=<n>

`action` is read from the host, not from the playbook: the unit's journal since the deploy began (the
master's "Handling signal: hup" or "Hang up: Master" is a reload, "usr2" or "USR2: new master forked" an
upgrade; systemd stopping and starting the unit with a new InvocationID is a restart; a unit gone is a
stop); `role` is the role's own account of its decision. `requests`/`failed` count every request of
the load run; `p99_ms` is the 99th percentile latency of the requests sent while the deploy ran; `retried`
counts requests whose kept-alive connection the server closed as the request went out, which the client
sent again once on a new connection (as HTTP clients do for idempotent requests; see loadgen.py): those
are idle kept-alive connections the server closed without announcing it, and are reported, not hidden.
For the instance's removal the load client stops each connection at the server's `Connection: close`
(loadgen --stop-on-close), as clients the stopping service turns away go elsewhere: that line counts the
requests up to then, and any the stop failed.

Each change also checks its effect on the host (the new greeting served, the rotated secret's digest, the
master's effective config, the worker count, the served release and gunicorn version, the listeners, the
unit's limit, the unit gone). The secret rotation also checks that the secret appears in no line of the
playbook's output (run with -v and --diff), in no journal line of the host, and in no process command line
sampled on the host while the deploy ran.

Exit status: non-zero if a check failed, or a line shows failed > 0 and is not in EXPECTED_FAILURES.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
import rollout  # tests/demo/rollout.py: the lab fleet and its playbook runner

REPO = rollout.REPO
LOADGEN = rollout.LOADGEN
INSTANCE = "change"
SERVICE = f"gunicorn-{INSTANCE}"
FIRST_PORT = 8000
SECOND_PORT = 8001
CONNECTIONS = 8  # kept-alive connections of the load client, each sending as fast as it is answered
LOAD_SECONDS = 900  # bound of one load run; a deploy takes far less
LOAD_MAX_REQUESTS = 5_000_000
SETTLE_SECONDS = 3  # load before and after each deploy
LOAD_NICENESS = 10
OLD_GUNICORN = "27.0.1"
NEW_GUNICORN = "26.2.0"  # the other gunicorn release in the test wheelhouse (tests/lab/build_wheelhouse.py)
# The unit change's open-file limit: above systemd's default soft limit (1024), below the hard limit a lab host
# inherits from the controller through systemd-nspawn (often 20000 or less), which systemd clamps a higher
# LimitNOFILE= to.
UNIT_NOFILE = 4096

# Lines that may show failed > 0, with why. Every other line must show failed=0.
EXPECTED_FAILURES: dict[str, str] = {
    # roles/server/README.md, "Adopting socket activation": the running master holds its addresses, so the
    # socket units can only listen once it has stopped; connections in between are refused. With the deploy's
    # drain hooks in front no client sees it; this proof sends its load straight to the host.
    "socket-activation": "adopting socket activation refuses connections while the old master stops",
}

KINDS = [
    "socket-activation",
    "environment",
    "secret",
    "config",
    "workers",
    "threads",
    "code",
    "gunicorn-version",
    "gunicorn-version-back",
    "python-version",
    "bind-added",
    "bind-removed",
    "unit",
    "removal",
]

# The deploy's variables, as a user keeps them in a vars file; every change edits one of them.
CHANGE_VARS = {
    "gunicorn_instance": INSTANCE,
    "gunicorn_app": "graceful_demo_wsgi:app",
    "gunicorn_app_package": "graceful-demo-wsgi",
    "gunicorn_release": "1.0.0",
    "gunicorn_version": OLD_GUNICORN,
    "gunicorn_worker_class": "gthread",
    "gunicorn_workers": 4,
    "gunicorn_timeout": 30,
    "gunicorn_bind": [f"0.0.0.0:{FIRST_PORT}"],
    "gunicorn_settings": {"threads": 2, "keepalive": 5, "worker_refresh_interval": 0},
    "gunicorn_environment": {"DEMO_GREETING": "hello"},
    "gunicorn_secret_environment": {"DEMO_SECRET": "first-secret"},
    "gunicorn_unit_extra": [],
    "gunicorn_socket_activation": False,
    "gunicorn_bake_seconds": 3,
}

# On the host: the unit's state, its workers, the journal cursor and the master's effective config.
HOST_STATE = r"""
import glob, json, os, subprocess, sys
service = sys.argv[1]
def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout
props = ["MainPID", "InvocationID", "NRestarts", "ActiveState", "LoadState", "LimitNOFILE", "TriggeredBy"]
shown = run("systemctl", "show", service + ".service", "-p", ",".join(props))
unit = dict(l.split("=", 1) for l in shown.splitlines() if "=" in l)
pid = int(unit.get("MainPID") or 0)
def ppid(p):
    try:
        return int(open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
workers = [int(e) for e in os.listdir("/proc") if e.isdigit() and pid and ppid(e) == pid]
config = None
if pid:
    try:
        argv = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
        bindir = next(os.path.dirname(a.decode()) for a in argv if a.endswith(b"/graceful-gunicorn"))
        for path in ("/run/%s/gunicorn.%d.ctl" % (service, pid), "/run/%s/gunicorn.ctl" % service):
            if os.path.exists(path):
                out = run(os.path.join(bindir, "gunicornc"), "-s", path, "-c", "show config", "-j")
                if out.strip():
                    config = json.loads(out)
                    break
    except (OSError, StopIteration, ValueError):
        pass
cursor = run("journalctl", "-n", "0", "--show-cursor", "-q").strip().rpartition("-- cursor: ")[2]
sockets = sorted(l.split()[0] for l in run("systemctl", "list-units", "--all", "--plain", "--no-legend",
                                        service + "-listen-*.socket").splitlines() if l.strip())
listening = sorted(set(l.split()[3] for l in run("ss", "-Hltn").splitlines() if len(l.split()) > 3))
interpreters = sorted(p for p in glob.glob("/usr/bin/python3.*") if p[len("/usr/bin/python3."):].isdigit())
print(json.dumps({"unit": unit, "pid": pid, "workers": workers, "config": config, "cursor": cursor,
                  "sockets": sockets, "listening": listening, "interpreters": interpreters}))
"""

# On the host: every distinct process command line, sampled every 20 ms until the stop file appears.
CMDLINE_SAMPLER = r"""
import os, sys, time
deadline, stop, seen = time.monotonic() + float(sys.argv[1]), sys.argv[2], set()
while time.monotonic() < deadline and not os.path.exists(stop):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                data = open("/proc/%s/cmdline" % entry, "rb").read()
            except OSError:
                continue
            if data not in seen:
                seen.add(data)
                sys.stdout.write(data.hex() + "\n")
                sys.stdout.flush()
    time.sleep(0.02)
"""


class Host:
    """The lab host, over the inventory's SSH key: state, journal and commands for the checks."""

    def __init__(self, inventory: Path):
        listing = json.loads(
            subprocess.run(
                [rollout.BIN / "ansible-inventory", "-i", str(inventory), "--list"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        name, hostvars = sorted(listing["_meta"]["hostvars"].items())[0]
        self.name = name
        self.address = hostvars.get("ansible_host", name)
        self.ssh = [
            "ssh", "-i", hostvars["ansible_ssh_private_key_file"], "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", f"root@{self.address}",
        ]  # fmt: skip

    def run(self, *command: str, stdin: str | None = None, timeout: float = 60) -> str:
        result = subprocess.run(
            [*self.ssh, shlex.join(command)], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise rollout.StepFailed(f"on {self.name}: {' '.join(command)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def state(self) -> dict:
        return json.loads(self.run("python3", "-", SERVICE, stdin=HOST_STATE))

    def journal(self, cursor: str, *units: str) -> list[dict]:
        args = ["journalctl", "--no-pager", "-o", "json", f"--after-cursor={cursor}"]
        for unit in units:
            args += ["-u", unit]
        return [json.loads(line) for line in self.run(*args, timeout=120).splitlines() if line.strip()]

    def whole_journal(self) -> str:
        return self.run("journalctl", "--no-pager", "-o", "json", timeout=120)

    def get(self, port: int, path: str = "/") -> dict:
        with urllib.request.urlopen(f"http://{self.address}:{port}{path}", timeout=5) as response:
            return json.load(response)

    def answers(self, port: int) -> bool:
        try:
            self.get(port, "/health")
        except (OSError, urllib.error.URLError):
            return False
        return True


class CmdlineSampler:
    """CMDLINE_SAMPLER on the host for the duration of a with block; .lines are the command lines seen."""

    def __init__(self, host: Host, seconds: float = 900):
        self.host = host
        self.seconds = seconds
        self.stop_file = f"/run/change-proof-sampler-{os.getpid()}"
        self.lines: list[bytes] = []

    def __enter__(self) -> CmdlineSampler:
        self.proc = subprocess.Popen(
            [*self.host.ssh, shlex.join(["python3", "-c", CMDLINE_SAMPLER, str(self.seconds), self.stop_file])],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.host.run("touch", self.stop_file)
            out = self.proc.communicate(timeout=30)[0]
        except (subprocess.TimeoutExpired, rollout.StepFailed):
            self.proc.terminate()
            out = self.proc.communicate(timeout=10)[0]
        self.host.run("rm", "-f", self.stop_file)
        self.lines = [bytes.fromhex(line) for line in (out or "").split()]


class FullLoad:
    """loadgen.py at full speed over kept-alive connections, for the duration of a with block.

    The deploy runs inside `with load.window():`; SETTLE_SECONDS of load come before and after it.
    With stop_on_close, each connection ends once the server answers it with `Connection: close`.
    """

    def __init__(
        self,
        out: Path,
        label: str,
        urls: list[str],
        bridge: str | None,
        stop_on_close: bool = False,
        connections: int = CONNECTIONS,
    ):
        self.connections = connections
        self.records = out / f"load-{label}.jsonl"
        self.marks = out / f"marks-{label}.json"
        self.summary_file = out / f"load-{label}-summary.json"
        self.stop_file = out / f"stop-{label}"
        self.urls = urls
        self.bridge = bridge
        self.stop_on_close = stop_on_close
        self.proc: subprocess.Popen | None = None
        self.during: list[float] | None = None

    def __enter__(self) -> FullLoad:
        self.stop_file.unlink(missing_ok=True)
        cmd = [sys.executable, str(LOADGEN), "run", "--out", str(self.records), "--connections", str(self.connections),
               "--seconds", str(LOAD_SECONDS), "--max-requests", str(LOAD_MAX_REQUESTS),
               "--stop-file", str(self.stop_file)]  # fmt: skip
        for url in self.urls:
            cmd += ["--url", url]
        if self.bridge:
            cmd += ["--bridge", self.bridge]
        if self.stop_on_close:
            cmd.append("--stop-on-close")
        # Niced: on a small controller the deploy it measures must still get the CPU it needs. Each
        # connection still sends its next request as soon as the last one was answered.
        self.proc = subprocess.Popen(["nice", "-n", str(LOAD_NICENESS), *cmd])
        time.sleep(SETTLE_SECONDS)
        if self.proc.poll() is not None:
            raise rollout.StepFailed(f"the load client exited {self.proc.returncode} before the deploy")
        return self

    def window(self) -> _Window:
        return _Window(self)

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None and exc[0] is None:
            time.sleep(SETTLE_SECONDS)
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.marks.write_text(json.dumps({"during": self.during}))

    def report(self) -> dict:
        subprocess.run(
            [sys.executable, str(LOADGEN), "report", str(self.records), "--marks", str(self.marks),
             "--json", str(self.summary_file)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return json.loads(self.summary_file.read_text())


class _Window:
    def __init__(self, load: FullLoad):
        self.load = load

    def __enter__(self) -> None:
        self.start = time.time()

    def __exit__(self, *exc) -> None:
        self.load.during = [self.start, time.time()]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def actions(journal: list[dict], before: dict, after: dict) -> str:
    """What ran on the host, in order, from the unit's journal and its InvocationID before and after."""
    seen: list[str] = []

    def note(action: str) -> None:
        if not seen or seen[-1] != action:
            seen.append(action)

    for entry in journal:
        message = entry.get("MESSAGE")
        if not isinstance(message, str):
            continue
        about_service = str(entry.get("_PID")) == "1" and entry.get("UNIT") == f"{SERVICE}.service"
        if "Handling signal: hup" in message or "Hang up: Master" in message:
            note("reload")
        elif "Handling signal: usr2" in message or "USR2: new master forked" in message:
            note("upgrade")
        elif about_service and message.startswith(("Stopping ", "Stopped ")):
            note("stop")
        elif about_service and message.startswith("Started "):
            note("start")
    text = "+".join(seen).replace("stop+start", "restart")
    old, new = before["unit"].get("InvocationID"), after["unit"].get("InvocationID")
    if "restart" not in text and old and new and old != new and after["unit"].get("ActiveState") == "active":
        text = "+".join(filter(None, [text, "restart"]))  # a new invocation the journal did not name
    return text or "none"


def decision(log: Path | None) -> str | None:
    """The role's own account of what it decided (its "Show the decision" task), when the log has one."""
    if log is None:
        return None
    found = re.findall(r"msg: '?" + re.escape(SERVICE) + r": ([^'\n]+)", log.read_text())
    return "; ".join(found) if found else None


class Proof:
    def __init__(self, fleet: rollout.Fleet, host: Host, out: Path, bridge: str | None):
        self.fleet = fleet
        self.host = host
        self.out = out
        self.bridge = bridge
        self.vars = json.loads(json.dumps(CHANGE_VARS))
        self.vars["gunicorn_secret_environment"]["DEMO_SECRET"] = secrets.token_hex(16)
        self.vars_file = out / "change-vars.json"
        self.host_wheelhouse = None
        self.lines: list[str] = []
        self.problems: list[str] = []
        self.totals = {"requests": 0, "failed": 0, "retried": 0}

    # -- the deploy, as a user runs it
    def write_vars(self) -> None:
        self.vars_file.touch(mode=0o600)
        self.vars_file.chmod(0o600)
        self.vars_file.write_text(json.dumps(self.vars, indent=2) + "\n")

    def deploy(self, *extra: str) -> tuple[Path, rollout.StepFailed | None]:
        """The deploy playbook with the vars file; its log, and its failure if it failed."""
        self.write_vars()
        logs_before = set(self.out.glob("deploy-*.log"))
        time.sleep(1.01)  # one log per second: rollout.Fleet names them by the second
        failure = None
        try:
            self.fleet.playbook("deploy", "-e", f"@{self.vars_file}", *extra)
        except rollout.StepFailed as exc:
            failure = exc
        new_logs = sorted(set(self.out.glob("deploy-*.log")) - logs_before)
        return new_logs[-1], failure

    def load_port(self) -> int:
        return int(self.vars["gunicorn_bind"][0].rsplit(":", 1)[1])

    # -- one change under load
    def change(self, kind, edit, verify, *, port=None, extra=(), stop_on_close=False, sample_cmdlines=False) -> None:
        rollout.say(f"change {kind}")
        port = port or self.load_port()
        before = self.host.state()
        edit()
        url = f"http://{self.host.address}:{port}/"
        sampler = CmdlineSampler(self.host) if sample_cmdlines else None
        log = failure = None
        try:
            with FullLoad(self.out, kind, [url], self.bridge, stop_on_close=stop_on_close) as load:
                if sampler:
                    sampler.__enter__()
                try:
                    with load.window():
                        log, failure = self.deploy(*extra)
                finally:
                    if sampler:
                        sampler.__exit__(None, None, None)
            report = load.report()
            after = self.host.state()
            journal = self.host.journal(before["cursor"], f"{SERVICE}.service", f"{SERVICE}-listen-*.socket")
            action = actions(journal, before, after)
            decided = decision(log)
            (self.out / f"journal-{kind}.txt").write_text(
                "\n".join(str(e.get("MESSAGE")) for e in journal if isinstance(e.get("MESSAGE"), str)) + "\n"
            )
        except rollout.StepFailed as exc:
            self.record(f"change={kind} error={json.dumps(str(exc))}", problem=f"{kind}: {exc}")
            return
        during = report["during"]
        p99 = during["p99_ms"] if during["p99_ms"] is not None else report["all"]["p99_ms"]
        line = (
            f"change={kind} action={action} requests={report['sent']} failed={report['failed']} "
            f"p99_ms={p99 if p99 is not None else '-'} retried={report['keepalive_retries']}"
        )
        if decided:
            line += f" role={json.dumps(decided)}"
        if report["errors"]:
            line += " errors=" + ",".join(f"{k.replace(' ', '_')}:{v}" for k, v in sorted(report["errors"].items()))
        problem = None
        if report["failed"] and kind not in EXPECTED_FAILURES:
            problem = f"{kind}: {report['failed']} requests failed"
        if failure is not None:
            problem = f"{kind}: {failure}" if problem is None else f"{problem}; {failure}"
            line += f" deploy_failed={json.dumps(str(failure))}"
        self.totals["requests"] += report["sent"]
        self.totals["failed"] += report["failed"]
        self.totals["retried"] += report["keepalive_retries"]
        try:
            verify(before, after, action, log, sampler)
        except rollout.StepFailed as exc:
            problem = f"{kind}: {exc}" if problem is None else f"{problem}; {exc}"
            line += f" check_failed={json.dumps(str(exc))}"
        self.record(line, problem=problem)

    def record(self, line: str, problem: str | None = None) -> None:
        self.lines.append(line)
        if problem:
            self.problems.append(problem)
        print(line, flush=True)

    # -- the checks
    def served(self, port: int | None = None, samples: int = 24) -> list[dict]:
        """GET / on fresh connections, enough to reach every worker."""
        return [self.host.get(port or self.load_port()) for _sample in range(samples)]

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise rollout.StepFailed(message)
        print(f"  ok: {message}", flush=True)

    def expect_action(self, action: str, allowed: set[str]) -> None:
        self.expect(action in allowed, f"action {action} is one of {sorted(allowed)}")

    def expect_config(self, after: dict, key: str, value) -> None:
        config = after.get("config") or {}
        self.expect(config.get(key) == value, f"the master's effective {key} is {config.get(key)!r} (want {value!r})")

    # -- the changes
    def initial_deploy(self) -> None:
        mode = "with" if self.vars["gunicorn_socket_activation"] else "without"
        rollout.say(f"deploy release 1.0.0 of the example WSGI app {mode} socket activation")
        _log, failure = self.deploy()
        if failure is not None:
            raise failure
        # Later deploys install from the copy the first one left on the host, as a fleet that gets its
        # wheelhouse by other means does: the copy is no part of any change.
        self.vars["gunicorn_wheelhouse"] = "/srv/gunicorn/change/wheelhouse"
        self.vars["gunicorn_wheelhouse_remote_src"] = True
        state = self.host.state()
        body = self.host.get(FIRST_PORT)
        self.expect(body["version"] == "1.0.0", f"serves release {body['version']}")
        self.expect(len(state["workers"]) == 4, f"{len(state['workers'])} workers")
        if self.vars["gunicorn_socket_activation"]:
            held = set(state["unit"].get("TriggeredBy", "").split())
            self.expect(state["sockets"] and set(state["sockets"]) <= held, f"socket units {sorted(held)} start it")
        else:
            self.expect(not state["sockets"], f"no socket units yet ({state['sockets']})")

    def socket_activation(self) -> None:
        def edit():
            self.vars["gunicorn_socket_activation"] = True

        def verify(before, after, action, *_):
            held = set(after["unit"].get("TriggeredBy", "").split())
            self.expect(after["sockets"] and set(after["sockets"]) <= held, f"socket units {sorted(held)} start it")
            self.expect(self.host.answers(FIRST_PORT), f"port {FIRST_PORT} answers")

        self.change("socket-activation", edit, verify)

    def environment(self) -> None:
        def edit():
            self.vars["gunicorn_environment"] = {"DEMO_GREETING": "hello again"}

        def verify(before, after, action, *_):
            greetings = {b["greeting"] for b in self.served()}
            self.expect(greetings == {"hello again"}, f"every answer greets {greetings}")
            self.expect_action(action, {"reload", "upgrade"})

        self.change("environment", edit, verify)

    def secret(self) -> None:
        old = self.vars["gunicorn_secret_environment"]["DEMO_SECRET"]
        new = secrets.token_hex(16)

        def edit():
            self.vars["gunicorn_secret_environment"] = {"DEMO_SECRET": new}

        def verify(before, after, action, log, sampler):
            served = {b["secret_sha256"] for b in self.served()}
            self.expect(served == {digest(new)}, f"every answer has the new secret's digest {served}")
            self.expect(digest(old) not in served, "the old secret is gone")
            logs = {path.name: path.read_text() for path in sorted(self.out.glob("deploy-*.log"))}
            journal = self.host.whole_journal()
            for value, name in ((new, "new"), (old, "old")):
                leaked = [n for n, text in logs.items() if value in text]
                self.expect(not leaked, f"the {name} secret is in none of the {len(logs)} playbook outputs {leaked}")
                self.expect(value not in journal, f"the {name} secret is in no journal line")
                hits = [c for c in sampler.lines if value.encode() in c]
                self.expect(not hits, f"the {name} secret is in none of {len(sampler.lines)} sampled command lines")
            self.expect_action(action, {"reload", "upgrade"})

        self.change("secret", edit, verify, extra=("-v", "--diff"), sample_cmdlines=True)

    def config(self) -> None:
        def edit():
            self.vars["gunicorn_timeout"] = 45

        def verify(before, after, action, *_):
            self.expect_config(after, "timeout", 45)
            self.expect_action(action, {"reload"})

        self.change("config", edit, verify)

    def workers(self) -> None:
        def edit():
            self.vars["gunicorn_workers"] = 6

        def verify(before, after, action, *_):
            deadline = time.monotonic() + 30  # retired workers of the old generation may still be draining
            while len(after["workers"]) != 6 and time.monotonic() < deadline:
                time.sleep(1)
                after = self.host.state()
            self.expect(len(after["workers"]) == 6, f"{len(after['workers'])} workers")
            self.expect_config(after, "workers", 6)
            self.expect_action(action, {"reload"})

        self.change("workers", edit, verify)

    def threads(self) -> None:
        def edit():
            self.vars["gunicorn_settings"] = {**self.vars["gunicorn_settings"], "threads": 3}

        def verify(before, after, action, *_):
            self.expect_config(after, "threads", 3)
            self.expect_action(action, {"reload"})

        self.change("threads", edit, verify)

    def code(self) -> None:
        def edit():
            self.vars["gunicorn_release"] = "2.0.0"

        def verify(before, after, action, *_):
            versions = {b["version"] for b in self.served()}
            self.expect(versions == {"2.0.0"}, f"serves {versions}")
            self.expect_action(action, {"upgrade"})

        self.change("code", edit, verify)

    def gunicorn_version(self) -> None:
        def edit():
            self.vars["gunicorn_version"] = NEW_GUNICORN

        def verify(before, after, action, *_):
            software = {b.get("server_software") for b in self.served()}
            self.expect(software == {f"gunicorn/{NEW_GUNICORN}"}, f"served by {software}")
            self.expect_action(action, {"upgrade"})

        self.change("gunicorn-version", edit, verify)

    def gunicorn_version_back(self) -> None:
        # Back to the pinned release, the one the arbiter's keep-alive drain is tested with, for the changes after.
        def edit():
            self.vars["gunicorn_version"] = OLD_GUNICORN

        def verify(before, after, action, *_):
            software = {b.get("server_software") for b in self.served()}
            self.expect(software == {f"gunicorn/{OLD_GUNICORN}"}, f"served by {software}")
            self.expect_action(action, {"upgrade"})

        self.change("gunicorn-version-back", edit, verify)

    def python_version(self) -> None:
        interpreters = self.host.state()["interpreters"]
        self.record(
            f"change=python-version skipped reason=the lab hosts run Debian bookworm, whose only CPython is "
            f"{','.join(interpreters) or 'none found'}: no second interpreter to move gunicorn_python to"
        )

    def bind_added(self) -> None:
        def edit():
            self.vars["gunicorn_bind"] = [f"0.0.0.0:{FIRST_PORT}", f"0.0.0.0:{SECOND_PORT}"]

        def verify(before, after, action, *_):
            self.expect(self.host.answers(SECOND_PORT), f"port {SECOND_PORT} answers")
            self.expect(self.host.answers(FIRST_PORT), f"port {FIRST_PORT} still answers")

        self.change("bind-added", edit, verify)

    def bind_removed(self) -> None:
        # The first address goes, the second stays and carries the load: a move, as a load balancer sees it.
        def edit():
            self.vars["gunicorn_bind"] = [f"0.0.0.0:{SECOND_PORT}"]

        def verify(before, after, action, *_):
            self.expect(self.host.answers(SECOND_PORT), f"port {SECOND_PORT} answers")
            self.expect(not self.host.answers(FIRST_PORT), f"port {FIRST_PORT} is closed")
            self.expect(f"0.0.0.0:{FIRST_PORT}" not in after["listening"], f"nothing listens on {FIRST_PORT}")

        self.change("bind-removed", edit, verify, port=SECOND_PORT)

    def unit(self) -> None:
        def edit():
            self.vars["gunicorn_unit_extra"] = [f"LimitNOFILE={UNIT_NOFILE}"]

        def verify(before, after, action, *_):
            limit = after["unit"].get("LimitNOFILE")
            self.expect(limit == str(UNIT_NOFILE), f"LimitNOFILE={limit}")
            limits = self.host.run("cat", f"/proc/{after['pid']}/limits")
            line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
            self.expect(line.split()[3] == str(UNIT_NOFILE), f"the master runs with {line.split()[3]} open files")
            self.expect("restart" in action, f"action {action} restarted the master")

        self.change("unit", edit, verify)

    def removal(self) -> None:
        def edit():
            self.vars["gunicorn_state"] = "absent"

        def verify(before, after, action, *_):
            self.expect(after["unit"].get("LoadState") == "not-found", f"unit {after['unit'].get('LoadState')}")
            self.expect(not after["sockets"], f"no socket units left ({after['sockets']})")
            self.expect(not self.host.answers(self.load_port()), "nothing answers any more")

        self.change("removal", edit, verify, stop_on_close=True)

    def totals_line(self) -> str:
        t = self.totals
        return f"total changes={len(self.lines)} requests={t['requests']} failed={t['failed']} retried={t['retried']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", type=Path, default=os.environ.get("LAB_INVENTORY"))
    parser.add_argument("--out", type=Path, default=REPO / "build" / "change-proof")
    parser.add_argument("--wheelhouse", type=Path, default=REPO / "build" / "wheelhouse")
    parser.add_argument("--bridge", default=os.environ.get("LAB_BRIDGE"))
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"a comma-separated subset of {','.join(KINDS)}")
    args = parser.parse_args()
    # A stop from outside (lab.py run's time-out, CI) unwinds: the load client and the playbook are stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(128 + 15))
    if not args.inventory:
        parser.error("--inventory (or LAB_INVENTORY) is required")
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; choose from {KINDS}")
    args.out.mkdir(parents=True, exist_ok=True)
    fleet = rollout.Fleet(args.inventory, args.out, args.wheelhouse, args.bridge)
    subprocess.run([sys.executable, str(REPO / "tests/lab/lab.py"), "check-route", *fleet.hosts.values()], check=True)
    proof = Proof(fleet, Host(args.inventory), args.out, args.bridge)
    # The demo's vars file comes first on rollout.Fleet's command line: every name in it is set here too.
    demo_names = {line.split(":")[0] for line in rollout.DEMO_VARS.read_text().splitlines() if line[:1].isalpha()}
    assert demo_names <= set(CHANGE_VARS), demo_names - set(CHANGE_VARS)
    if "socket-activation" not in kinds:
        # The changes after the adoption are made to a socket-activated instance: without the adoption in
        # this run, the first deploy starts it socket-activated, as the full run leaves it.
        proof.vars["gunicorn_socket_activation"] = True
    try:
        proof.initial_deploy()
    except rollout.StepFailed as exc:
        print(f"\nFAILED: the first deploy: {exc}", file=sys.stderr)
        return 1
    for kind in KINDS:
        if kind in kinds:
            getattr(proof, kind.replace("-", "_"))()
    print("\n=== results", flush=True)
    for line in proof.lines:
        print(line)
    print(proof.totals_line())
    for kind, reason in EXPECTED_FAILURES.items():
        print(f"expected failures on {kind}: {reason}")
    if proof.problems:
        print("\nFAILED:\n  " + "\n  ".join(proof.problems), file=sys.stderr)
        return 1
    print("\nchange-proof: every line as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
