"""Worker side of readiness: a worker is ready once its own app object answered the health call.

The master forks every worker from a subclass of the configured worker class (`with_readiness`).
That subclass calls the app in-process once it is loaded and reports the outcome to the master
over a pipe whose write end it inherits (`REPORT_FD`): one line `"<pid> ok"` or
`"<pid> fail <reason>"`, short enough for the kernel to write atomically.

- WSGI workers (sync, gthread, gevent...): the app is called with a synthetic environ in `run()`,
  after `post_worker_init` and before the worker accepts a connection.
- ASGI workers (gunicorn's `asgi`, `uvicorn_worker.UvicornWorker`): the app is wrapped so that
  when it sends `lifespan.startup.complete` the health call runs first, with a synthetic scope
  sharing the lifespan state. Only then is `startup.complete` passed on, so the worker does not
  serve before it is ready; a failed call is passed on as `lifespan.startup.failed`, which makes
  both worker classes exit with gunicorn's WORKER_BOOT_ERROR (3).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
from urllib.parse import urlsplit

from graceful_arbiter import drain as _drain

WORKER_BOOT_ERROR = 3

# Write end of the master's readiness pipe, set in the master before it forks workers.
REPORT_FD: int | None = None


def report(ok: bool, detail: str = "") -> None:
    """Tell the master this worker is ready, or why it is not."""
    if REPORT_FD is None:
        return
    status = "ok" if ok else "fail"
    line = f"{os.getpid()} {status} {' '.join(detail.split())[:300]}".rstrip()
    with contextlib.suppress(OSError):  # the master is gone: nothing to tell
        os.write(REPORT_FD, (line + "\n").encode("utf-8", "replace"))


def parse_reports(data: bytes) -> list[tuple[int, bool, str]]:
    """Master side: complete lines of the pipe as (pid, ok, detail)."""
    reports = []
    for line in data.decode("utf-8", "replace").splitlines():
        pid, _sep, rest = line.partition(" ")
        status, _sep, detail = rest.partition(" ")
        if pid.isdigit() and status in ("ok", "fail"):
            reports.append((int(pid), status == "ok", detail))
    return reports


def _status_is_ready(status: int) -> bool:
    return 200 <= status < 400


# --- WSGI ------------------------------------------------------------------------------------


def wsgi_environ(path: str, host: str) -> dict:
    parts = urlsplit(path)
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": parts.path,
        "QUERY_STRING": parts.query,
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "HTTP_USER_AGENT": "graceful-gunicorn-readiness",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call_wsgi(app, path: str, host: str) -> tuple[bool, str]:
    """Call a WSGI app once; (ready, detail)."""
    status_line = []

    def start_response(status, headers, exc_info=None):
        status_line[:] = [status]
        return lambda data: None

    try:
        body = app(wsgi_environ(path, host), start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
    except Exception as exc:  # the app's failure is the worker's, reported as such
        return False, f"GET {path} raised {type(exc).__name__}: {exc}"
    if not status_line:
        return False, f"GET {path}: the app never called start_response"
    code = int(status_line[0].split()[0])
    if _status_is_ready(code):
        return True, f"GET {path}: {status_line[0]}"
    return False, f"GET {path} answered {status_line[0]}"


# --- ASGI ------------------------------------------------------------------------------------


def http_scope(path: str, host: str, state: dict | None) -> dict:
    parts = urlsplit(path)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode("latin-1"),
        "query_string": parts.query.encode("latin-1"),
        "root_path": "",
        "headers": [(b"host", host.encode("latin-1")), (b"user-agent", b"graceful-gunicorn-readiness")],
        "client": ("127.0.0.1", 0),
        "server": (host, 80),
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope


async def call_asgi(app, path: str, host: str, state: dict | None, timeout: float) -> tuple[bool, str]:
    """Call an ASGI app once over HTTP; (ready, detail)."""
    responded = asyncio.Event()
    status = []
    sent_request = False

    async def receive():
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await responded.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status[:] = [int(message["status"])]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            responded.set()

    try:
        await asyncio.wait_for(app(http_scope(path, host, state), receive, send), timeout or None)
    except asyncio.TimeoutError:
        return False, f"GET {path} did not answer within {timeout:g}s"
    except Exception as exc:
        return False, f"GET {path} raised {type(exc).__name__}: {exc}"
    if not status:
        return False, f"GET {path}: the app sent no response"
    if _status_is_ready(status[0]):
        return True, f"GET {path}: {status[0]}"
    return False, f"GET {path} answered {status[0]}"


class AsgiReadinessGate:
    """ASGI app wrapper that holds `lifespan.startup.complete` back until the health call passed."""

    def __init__(self, app, path: str | None, host: str, timeout: float, drain: _drain.Drain | None = None):
        self.app = app
        self.path = path
        self.host = host
        self.timeout = timeout
        self.reported = False
        self._lifespan_seen = False
        # When set, responses starting once the worker drains say `Connection: close` (drain.py).
        self.drain = drain
        self.on_ready = None  # called in the worker's loop once the worker is ready

    async def check(self, state: dict | None) -> tuple[bool, str]:
        if not self.path:
            return True, "app loaded (no health path)"
        return await call_asgi(self.app, self.path, self.host, state, self.timeout)

    def _report(self, ok: bool, detail: str) -> None:
        self.reported = True
        report(ok, detail)
        if ok and self.on_ready is not None:
            self.on_ready()

    async def check_without_lifespan(self) -> None:
        """For servers that never run lifespan: the worker may already accept, so failing is fatal."""
        if self.reported:
            return
        ok, detail = await self.check(None)
        self._report(ok, detail)
        if not ok:
            sys.stderr.write(f"[graceful] worker not ready: {detail}\n")
            sys.stderr.flush()
            os._exit(WORKER_BOOT_ERROR)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.drain is not None:
            return await self.app(scope, receive, self.drain.closing_send(send))
        if scope["type"] != "lifespan" or self._lifespan_seen:
            return await self.app(scope, receive, send)
        self._lifespan_seen = True
        state = scope.get("state")

        async def gated_send(message):
            if message["type"] == "lifespan.startup.complete" and not self.reported:
                ok, detail = await self.check(state)
                self._report(ok, detail)
                if not ok:
                    message = {"type": "lifespan.startup.failed", "message": f"not ready: {detail}"}
            elif message["type"] == "lifespan.startup.failed" and not self.reported:
                self._report(False, f"lifespan startup failed: {message.get('message', '')}")
            await send(message)

        try:
            return await self.app(scope, receive, gated_send)
        finally:
            # An app without lifespan support returns or raises without a startup message.
            if not self.reported:
                await self.check_without_lifespan()


# --- the worker class ------------------------------------------------------------------------


def _based_on(worker_class: type, *prefixes: str) -> bool:
    return any((base.__module__ or "").startswith(prefixes) for base in worker_class.__mro__)


def is_uvicorn_worker(worker_class: type) -> bool:
    return _based_on(worker_class, "uvicorn")


def is_gunicorn_asgi_worker(worker_class: type) -> bool:
    return _based_on(worker_class, "gunicorn.workers.gasgi")


def is_asgi_worker(worker_class: type) -> bool:
    return is_uvicorn_worker(worker_class) or is_gunicorn_asgi_worker(worker_class)


class ReadinessMixin:
    """Mixed in before the configured worker class; see the module docstring."""

    def load_wsgi(self):
        super().load_wsgi()
        if not is_asgi_worker(type(self)):
            return
        # gunicorn's asgi worker serves self.asgi, uvicorn-worker serves self.wsgi.
        attr = "asgi" if hasattr(self, "asgi") else "wsgi"
        uvicorn = is_uvicorn_worker(type(self))
        # uvicorn, and gunicorn's `asgi` before 27 (GunicornAsgiDrainMixin): `Connection: close` is
        # added here, to the app's responses; gunicorn 27's protocol decides it itself.
        drain = (
            _drain.Drain.for_graceful_timeout(self.cfg.graceful_timeout)
            if uvicorn
            else getattr(self, "graceful_app_drain", None)
        )
        gate = AsgiReadinessGate(
            getattr(self, attr),
            self.cfg.worker_health_path,
            self.cfg.worker_health_host,
            self.cfg.worker_boot_timeout,
            drain=drain,
        )
        if uvicorn:
            # uvicorn installs its signal handlers just before it starts the app: by the time the
            # app is ready they are in place, and the drain goes in front of them.
            gate.on_ready = lambda: _drain.install_uvicorn_drain(drain, self.log)
        setattr(self, attr, gate)
        self.graceful_gate = gate

    def run(self):
        gate = getattr(self, "graceful_gate", None)
        if gate is not None:
            if getattr(self.cfg, "asgi_lifespan", "auto") == "off" and hasattr(self, "loop"):
                self.loop.call_soon(lambda: self.loop.create_task(gate.check_without_lifespan()))
        else:
            path = self.cfg.worker_health_path
            ok, detail = call_wsgi(self.wsgi, path, self.cfg.worker_health_host) if path else (True, "app loaded")
            report(ok, detail)
            if not ok:
                self.log.error("Worker not ready: %s", detail)
                sys.exit(WORKER_BOOT_ERROR)
        return super().run()


class GunicornAsgiDrainMixin:
    """For gunicorn's `asgi` worker: SIGTERM drains kept-alive connections first (drain.py)."""

    def init_process(self):
        from gunicorn.workers import gasgi

        self.graceful_drain = _drain.Drain.for_graceful_timeout(self.cfg.graceful_timeout)
        protocol = _drain.draining_asgi_protocol(getattr(gasgi, "ASGIProtocol", None))
        if protocol is not None:
            # This process only: the worker builds its connections from the module's name.
            gasgi.ASGIProtocol = protocol
        else:
            # gunicorn 25.1 to 26.x: no ASGIProtocol._will_close (new in 27). Their protocol keeps a
            # connection open after a response for as long as the worker is alive, which it stays
            # during the drain; the app's responses say `Connection: close` (load_wsgi), as under uvicorn.
            self.graceful_app_drain = self.graceful_drain
        super().init_process()

    def handle_exit_signal(self):
        drain = getattr(self, "graceful_drain", None)
        if drain is None:
            return super().handle_exit_signal()
        stock_exit = super().handle_exit_signal
        return drain.begin(self.loop, getattr(self, "servers", ()), lambda: self.nr_conns, stock_exit, self.log)


class GthreadDrainMixin:
    """For gunicorn's gthread worker: on SIGTERM, idle kept-alive connections stay open as long as
    their ordinary keep-alive timeout allows (at most half of graceful_timeout), not gunicorn's
    fixed 2 s; a request arriving on one meanwhile is answered with `Connection: close`.

    gthread already answers with `Connection: close` once stopping, and closes the connection after
    that response; what it cuts short is the wait for idle clients, which then find the connection
    closed under them when they send. The linger is a module constant gthread reads at each use:
    it is set in this worker process only. gunicorn 25.1 to 26.x have no linger and close a connection
    right after a response that announced keep-alive; there it stays until its keep-alive timeout.
    """

    graceful_keep_announced = False

    def init_process(self):
        from gunicorn.workers import gthread

        if hasattr(gthread, "STOP_KEEPALIVE_LINGER"):
            gthread.STOP_KEEPALIVE_LINGER = max(
                float(gthread.STOP_KEEPALIVE_LINGER), _drain.drain_seconds(self.cfg.graceful_timeout)
            )
        else:
            self.graceful_keep_announced = True  # gunicorn 25.1 to 26.x, see finish_request
        super().init_process()

    def finish_request(self, conn, fs):
        if self.alive or not self.graceful_keep_announced:
            return super().finish_request(conn, fs)
        # gunicorn 25.1 to 26.x (no STOP_KEEPALIVE_LINGER): a stopping worker closes a connection
        # right after a response that announced keep-alive, under a client that may be sending its
        # next request. Their own keep-alive path keeps it instead, until its keep-alive timeout;
        # that request is answered with `Connection: close`, as gunicorn 27 answers it.
        self.alive = True
        try:
            return super().finish_request(conn, fs)
        finally:
            self.alive = False

    def wait_for_and_dispatch_events(self, timeout):
        if not self.alive and self.graceful_keep_announced:
            # gunicorn 25.1 to 26.x wait for the rest of graceful_timeout in one select once stopping:
            # look every second, so that kept connections close at their keep-alive timeout.
            timeout = min(timeout, 1.0)
        return super().wait_for_and_dispatch_events(timeout)


def is_gthread_worker(worker_class: type) -> bool:
    return _based_on(worker_class, "gunicorn.workers.gthread")


_CLASSES: dict = {}


def with_readiness(worker_class: type) -> type:
    """The configured worker class with readiness reporting mixed in (one subclass per class)."""
    if issubclass(worker_class, ReadinessMixin):
        return worker_class
    if worker_class not in _CLASSES:
        mixins = (ReadinessMixin,)
        if is_gunicorn_asgi_worker(worker_class) and hasattr(worker_class, "handle_exit_signal"):
            mixins += (GunicornAsgiDrainMixin,)
        if is_gthread_worker(worker_class):
            mixins += (GthreadDrainMixin,)
        _CLASSES[worker_class] = type(
            worker_class.__name__,
            (*mixins, worker_class),
            {"__module__": worker_class.__module__, "__qualname__": worker_class.__qualname__},
        )
    return _CLASSES[worker_class]
