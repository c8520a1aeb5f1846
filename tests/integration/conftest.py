"""Real gunicorn masters on 127.0.0.1 (ephemeral ports), a bounded load client, and a module runner.

Every process a test starts is stopped by PID in teardown; nothing is killed by name.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from proctree import alive as _alive
from proctree import children as _children

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "build" / "collections"
LINK = COLLECTIONS / "ansible_collections" / "graceful" / "gunicorn"
VENV_BIN = REPO / ".venv" / "bin"
APPS = REPO / "examples" / "apps"
ARBITER_SRC = REPO / "arbiter" / "src"

if not LINK.exists():
    LINK.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(REPO, LINK)
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

APP_MODULES = {"wsgi": "graceful_demo_wsgi", "asgi": "graceful_demo_asgi"}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Site:
    """A release layout: releases/<name>/<app package>, a `current` symlink, a config, a pidfile, a log."""

    def __init__(
        self, root, kind="wsgi", worker_class="sync", workers=2, arbiter="stock", preload=False, extra_conf=""
    ):
        self.root = Path(root)
        self.kind = kind
        self.module = APP_MODULES[kind]
        self.worker_class = worker_class
        self.workers = workers
        self.arbiter = arbiter
        self.preload = preload
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pidfile = str(self.root / "run" / "master.pid")
        self.config = str(self.root / "gunicorn.conf.py")
        self.current = self.root / "current"
        self.log = self.root / "gunicorn.log"
        self.control_socket = str(self.root / "run" / "control.sock")
        self.proc = None
        self.extra_conf = extra_conf
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        self.pids_seen = set()

    def release(self, name, version, behaviour="ok"):
        """Copy the example app into releases/<name> with its version and drill baked in."""
        target = self.root / "releases" / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(APPS / self.kind / self.module, target / self.module)
        init = target / self.module / "__init__.py"
        text = init.read_text()
        text = text.replace('__version__ = "1.0.0"', f'__version__ = "{version}"')
        drill = f'os.environ.get("DEMO_BEHAVIOUR", "{behaviour}")'
        text = text.replace('os.environ.get("DEMO_BEHAVIOUR", "ok")', drill)
        init.write_text(text)
        return target

    def switch(self, name):
        """Point `current` at releases/<name> atomically, as a deploy does."""
        tmp = self.root / "current.tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(self.root / "releases" / name, tmp)
        os.replace(tmp, self.current)

    def write_config(self):
        lines = [
            f"bind = '127.0.0.1:{self.port}'",
            f"workers = {self.workers}",
            f"worker_class = {self.worker_class!r}",
            f"pidfile = {self.pidfile!r}",
            "graceful_timeout = 10",
            "timeout = 30",
            "keepalive = 2",
            f"preload_app = {self.preload!r}",
            f"control_socket = {self.control_socket!r}",
            "loglevel = 'info'",
        ]
        if self.worker_class == "gthread":
            lines.append("threads = 4")
        Path(self.config).write_text("\n".join(lines) + "\n" + self.extra_conf)

    def command(self):
        script = "graceful-gunicorn" if self.arbiter == "graceful" else "gunicorn"
        return [str(VENV_BIN / script), "-c", self.config, f"{self.module}:app"]

    def start(self, timeout=30):
        self.write_config()
        env = dict(os.environ)
        env.pop("DEMO_BEHAVIOUR", None)
        env["PWD"] = str(self.current)
        env["PYTHONPATH"] = str(ARBITER_SRC)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), cwd=str(self.current), env=env, stdout=log, stderr=log, start_new_session=True
            )
        self.pids_seen.add(self.proc.pid)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited at start:\n" + self.log.read_text()[-3000:])
            if self.healthy() and self.all_workers_ready():
                return self
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not become healthy:\n" + self.log.read_text()[-3000:])

    def all_workers_ready(self):
        """Every worker has run its main loop: only then has it imported the release `current` points to."""
        from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc

        try:
            snap = gunicorn_proc.snapshot(self.master_pid(), self.pidfile, 0.5)
        except (OSError, ValueError):
            return False
        return len(snap["workers"]) >= self.workers and all(w["ready"] for w in snap["workers"])

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status == 200
        except Exception:
            return False

    def version(self):
        with urllib.request.urlopen(self.url + "/version", timeout=5) as response:
            return json.loads(response.read())["version"]

    def master_pid(self):
        with open(self.pidfile) as handle:
            return int(handle.read().strip())

    def track(self):
        """Remember every master and worker seen, so teardown can stop them by PID."""
        for path in (self.pidfile, self.pidfile + ".2"):
            try:
                with open(path) as handle:
                    self.pids_seen.add(int(handle.read().strip()))
            except (OSError, ValueError):
                pass
        for pid in list(self.pids_seen):
            self.pids_seen.update(_children(pid))

    def stop(self):
        self.track()
        masters = [pid for pid in self.pids_seen if _alive(pid)]
        for pid in masters:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(pid) for pid in self.pids_seen):
            if self.proc is not None:
                self.proc.poll()
            time.sleep(0.1)
        for pid in self.pids_seen:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


@pytest.fixture
def make_site(tmp_path):
    sites = []

    def factory(**kwargs):
        site = Site(tmp_path / f"site{len(sites)}", **kwargs)
        sites.append(site)
        return site

    yield factory
    for site in sites:
        site.stop()


class Load:
    """Keep-alive GET / from a few threads, bounded by request count AND seconds; stops by itself."""

    def __init__(self, url, threads=4, seconds=60.0, max_requests=20000, path="/version"):
        self.url = url
        self.threads = threads
        self.seconds = seconds
        self.max_requests = max_requests
        self.path = path
        self.lock = threading.Lock()
        self.sent = 0
        self.failures = []
        self.keepalive_races = 0
        self.versions = {}
        self.stop_event = threading.Event()
        self._threads = []

    def _worker(self):
        import http.client

        host, port = self.url.split("//", 1)[1].split(":")
        conn = None
        deadline = time.time() + self.seconds
        while not self.stop_event.is_set() and time.time() < deadline:
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            try:
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                try:
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
                    if not reused:
                        raise
                    # The server closed an idle kept-alive connection as this request went out: what HTTP clients
                    # retry on a fresh connection (urllib3 does). Counted apart, retried once.
                    with self.lock:
                        self.keepalive_races += 1
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                version = json.loads(body).get("version")
                with self.lock:
                    self.versions[version] = self.versions.get(version, 0) + 1
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.002)
        if conn is not None:
            conn.close()

    def __enter__(self):
        for _thread in range(self.threads):
            thread = threading.Thread(target=self._worker, daemon=True)
            thread.start()
            self._threads.append(thread)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return False


@pytest.fixture
def load():
    return Load


def run_module(name, args, check_mode=False, timeout=300):
    """Run a module file as Ansible would on the host: python module.py ARGS.json; returns its JSON result."""
    path = REPO / "plugins" / "modules" / f"{name}.py"
    payload = {"ANSIBLE_MODULE_ARGS": dict(args)}
    if check_mode:
        payload["ANSIBLE_MODULE_ARGS"]["_ansible_check_mode"] = True
    env = dict(os.environ)
    env["PYTHONPATH"] = str(COLLECTIONS)
    started = time.time()
    out = subprocess.run(
        [str(VENV_BIN / "python"), str(path)],
        input=json.dumps(payload).encode(),
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    text = out.stdout.decode()
    try:
        result = json.loads(text[text.index("{") :])
    except ValueError:
        raise AssertionError(f"module {name} printed no JSON:\n{text}\n{out.stderr.decode()}") from None
    result["_elapsed"] = round(time.time() - started, 2)
    return result


@pytest.fixture
def module():
    return run_module
