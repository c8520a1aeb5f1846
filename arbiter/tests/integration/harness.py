"""Real graceful-gunicorn masters on 127.0.0.1 with ephemeral ports, and a bounded load client."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from graceful_arbiter.client import ControlError, master_socket_path, request

ROOT = Path(__file__).resolve().parents[3]
APPS = {"wsgi": ROOT / "examples/apps/wsgi", "asgi": ROOT / "examples/apps/asgi"}
BIN = Path(sys.executable).parent
WORKER_CLASSES = {
    "sync": ("wsgi", "sync"),
    "gthread": ("wsgi", "gthread"),
    "asgi": ("asgi", "asgi"),
    "uvicorn": ("asgi", "uvicorn_worker.UvicornWorker"),
}

# post_fork runs in each new worker before it imports the app: the drill file switches
# DEMO_BEHAVIOUR for the next workers without touching the master.
CONFIG_TEMPLATE = """
import os
bind = "127.0.0.1:{port}"
workers = {workers}
worker_class = "{worker_class}"
pidfile = "{dir}/master.pid"
control_socket = "{dir}/control.sock"
graceful_timeout = {graceful_timeout}
timeout = 60
keepalive = 5
loglevel = "info"
{extra}

def post_fork(server, worker):
    try:
        with open("{dir}/drill") as f:
            os.environ["DEMO_BEHAVIOUR"] = f.read().strip() or "ok"
    except FileNotFoundError:
        pass
"""


# What systemd does for a socket-activated service, in the process it then turns into the service:
# the sockets go to fds 3, 4, ... and LISTEN_FDS/LISTEN_PID name them for this very PID.
SOCKET_ACTIVATION_EXEC = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def listening_socket(backlog: int = 1024) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ControlError, ValueError):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Master:
    """One graceful-gunicorn process tree; everything it starts is stopped by PID in stop()."""

    def __init__(
        self,
        tmp: Path,
        kind: str = "sync",
        workers: int = 2,
        graceful_timeout: int = 10,
        socket_activation: bool = False,
        **settings,
    ):
        self.dir = tmp
        self.app, self.worker_class = WORKER_CLASSES[kind]
        # Under socket activation this process stands in for systemd: it holds the listening
        # socket for as long as the test runs and hands it to each master it starts as fd 3.
        self.activation_socket = listening_socket() if socket_activation else None
        self.port = self.activation_socket.getsockname()[1] if socket_activation else free_port()
        self.workers = workers
        self.graceful_timeout = graceful_timeout
        self.settings = {"worker_health_path": "/health", **settings}
        self.env = {}
        self.proc = None
        self.seen_pids: set[int] = set()
        self.log_path = tmp / "gunicorn.log"
        self.write_config()

    def write_config(self, **changes):
        self.settings.update(changes)
        extra = "\n".join(f"{k} = {v!r}" for k, v in self.settings.items())
        (self.dir / "gunicorn.conf.py").write_text(
            CONFIG_TEMPLATE.format(
                port=self.port,
                workers=self.workers,
                worker_class=self.worker_class,
                dir=self.dir,
                graceful_timeout=self.graceful_timeout,
                extra=extra,
            )
        )

    def drill(self, behaviour: str):
        (self.dir / "drill").write_text(behaviour)

    def start(self, wait: bool = True, cwd: Path | None = None, **env):
        environ = dict(os.environ, PYTHONPATH=str(APPS[self.app]), **self.env, **env)
        environ.pop("GUNICORN_CMD_ARGS", None)
        command = [
            str(BIN / "graceful-gunicorn"),
            "-c",
            str(self.dir / "gunicorn.conf.py"),
            f"graceful_demo_{self.app}:app",
        ]
        pass_fds = ()
        if self.activation_socket is not None:
            fd = self.activation_socket.fileno()
            command = [sys.executable, "-c", SOCKET_ACTIVATION_EXEC, str(fd), *command]
            pass_fds = (fd,)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=cwd or self.dir,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def socket_of(self, pid: int) -> str:
        return master_socket_path(str(self.dir / "control.sock"), pid)

    def command(self, command: str, pid: int | None = None) -> dict:
        return request(self.socket_of(pid or self.pid), command, timeout=10)

    def status(self, pid: int | None = None) -> dict:
        status = self.command("graceful status", pid)
        self.seen_pids.update(w["pid"] for w in status["workers"])
        return status

    def ready_pids(self, pid: int | None = None) -> set:
        return {w["pid"] for w in self.status(pid)["workers"] if w["state"] == "ready"}

    def wait_ready(self, count: int | None = None, pid: int | None = None, timeout: float = 40):
        count = self.workers if count is None else count

        def settled():
            if self.proc.poll() is not None and pid is None:
                raise AssertionError(f"master exited with {self.proc.returncode}:\n{self.log()}")
            s = self.status(pid)
            states = [w["state"] for w in s["workers"]]
            return s if states.count("ready") == count and len(states) == count else None

        return wait_for(settled, timeout, what=f"{count} ready workers")

    def refresh(self, pid: int | None = None) -> int:
        return self.command("graceful refresh", pid)["request_id"]

    def wait_refresh_done(self, after_id: int = 0, timeout: float = 60, pid: int | None = None) -> dict:
        def done():
            last = self.status(pid)["refresh"]["last"]
            return last if last and last["id"] > after_id else None

        return wait_for(done, timeout, what="refresh to finish")

    def last_refresh_id(self) -> int:
        last = self.status()["refresh"]["last"]
        return last["id"] if last else 0

    def signal(self, sig: int, pid: int | None = None):
        os.kill(pid or self.pid, sig)

    def url(self, path: str = "/") -> tuple:
        return ("127.0.0.1", self.port, path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        """TERM the master (and any master it re-executed), then SIGKILL whatever of ours is left."""
        pids = {self.pid} if self.proc else set()
        for path in (self.dir / "master.pid", self.dir / "master.pid.2"):
            with contextlib.suppress(OSError, ValueError):
                pids.add(int(path.read_text().strip()))
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        if self.proc:
            try:
                self.proc.wait(timeout=self.graceful_timeout + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        for pid in pids - {self.pid} | self.seen_pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.activation_socket is not None:
            self.activation_socket.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie of a process that is not our child cannot be reaped here; count it as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    return False


class Load:
    """Bounded HTTP load: `threads` clients, half keep-alive, half one connection per request.

    Stops by itself after `max_requests` in total or `seconds`, whichever comes first, or on stop().
    """

    def __init__(
        self,
        port: int,
        threads: int = 4,
        max_requests: int = 20000,
        seconds: float = 60,
        path="/",
        host="127.0.0.1",
        mode: str = "mixed",  # mixed: half the threads keep connections alive; or "keepalive", "new-conn"
    ):
        self.port, self.path, self.host = port, path, host
        self.max_requests, self.seconds = max_requests, seconds
        self.failures: list[str] = []
        self.requests: list[tuple[float, float]] = []  # (start, latency) of each answered request
        self.keepalive_failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._run, args=(i % 2 == 0 if mode == "mixed" else mode == "keepalive",), daemon=True
            )
            for i in range(threads)
        ]

    def __enter__(self):
        self._deadline = time.monotonic() + self.seconds
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    @property
    def ok(self) -> int:
        return len(self.requests)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def _more(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline and self.total < self.max_requests

    def _run(self, keepalive: bool):
        conn = None
        while self._more():
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                if not keepalive or response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
                with self._lock:
                    self.requests.append((start, time.monotonic() - start))
            except Exception as exc:
                with self._lock:
                    self.failures.append(
                        f"{time.time():.3f} {'keep-alive' if keepalive else 'new-conn'}: {type(exc).__name__}: {exc}"
                    )
                    self.keepalive_failures += keepalive
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
            time.sleep(0.002)
        if conn is not None:
            conn.close()


class CapacityWatch:
    """Polls `graceful status` and keeps the lowest number of ready, non-retiring workers seen."""

    def __init__(self, master: Master, interval: float = 0.1):
        self.master, self.interval = master, interval
        self.lowest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self):
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ControlError, ValueError):
                status = self.master.status()
                if not status["master"]["winched"]:
                    ready = status["ready_workers"]
                    self.lowest = ready if self.lowest is None else min(self.lowest, ready)
                    self.samples += 1
            time.sleep(self.interval)
