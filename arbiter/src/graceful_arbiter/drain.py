"""Retiring an asyncio worker without racing its kept-alive clients.

A client may send its next request on a kept-alive connection at any moment after a response that
did not say `Connection: close`. A worker that closes such a connection when it is told to stop
races that request: the client gets a reset or an empty reply. Both ASGI worker classes do so on
SIGTERM: uvicorn closes every idle connection at once, and gunicorn's `asgi` worker closes a
connection after a response that had already promised to keep it open.

A retiring worker here drains instead, for at most half of `graceful_timeout`:

1. it stops accepting (the master and the other workers keep the listening socket);
2. every response that starts from now on says `Connection: close`, and the connection closes
   right after it; a response already under way keeps what it announced, so its connection
   stays open for one more request, which is then answered with `Connection: close`;
3. idle connections end through the worker's ordinary keep-alive timeout;
4. once no connection is left, or the drain time is over, the worker's own graceful exit runs.

Only a client idle for longer than the keep-alive timeout can still race a close, exactly as it
does when that timeout expires on a worker that is not retiring; and, when `keepalive` is longer
than half of `graceful_timeout`, a client idle past the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

CLOSE_HEADER = (b"connection", b"close")
POLL_SECONDS = 0.02
ANNOUNCED_KEPT = 8  # decisions remembered per connection (gunicorn bounds unfinished app calls at 4)


def drain_seconds(graceful_timeout: float) -> float:
    """How long a retiring worker waits for its connections before its own graceful exit.

    Idle connections end by themselves, `keepalive` seconds after their last response. Half the
    graceful timeout stays for the worker's own shutdown before the master sends SIGKILL.
    """
    return max(0.0, float(graceful_timeout) / 2)


def with_close_header(headers) -> list:
    """Response headers that announce the end of the connection (once, whatever the case)."""
    headers = list(headers or ())
    for name, value in headers:
        if name.lower() == b"connection" and b"close" in value.lower():
            return headers
    return [*headers, CLOSE_HEADER]


class Drain:
    """One worker's drain: whether it started, and the wait for its connections to end."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started_at: float | None = None
        self.task: asyncio.Task | None = None  # the wait, kept referenced while it runs

    @classmethod
    def for_graceful_timeout(cls, graceful_timeout: float) -> Drain:
        return cls(drain_seconds(graceful_timeout))

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def start(self) -> bool:
        """Start draining; False when it had already started."""
        if self.active:
            return False
        self.started_at = time.monotonic()
        return True

    async def wait(self, open_connections: Callable[[], int]) -> int:
        """Wait until no connection is open or the drain time is over; the connections left."""
        deadline = (self.started_at or time.monotonic()) + self.seconds
        # A connection accepted just before the listeners closed becomes a protocol a loop turn
        # or two later: count only after that.
        await asyncio.sleep(POLL_SECONDS)
        while open_connections() and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        return open_connections()

    def closing_send(self, send):
        """An ASGI `send` that adds `Connection: close` to a response starting during the drain."""

        async def send_closing_when_draining(message):
            if self.active and message["type"] == "http.response.start":
                message = dict(message, headers=with_close_header(message.get("headers")))
            await send(message)

        return send_closing_when_draining

    def begin(self, loop, servers, open_connections: Callable[[], int], stock_exit: Callable[[], None], log) -> None:
        """Start draining in the worker's loop, then run the worker's own graceful exit.

        `stock_exit` runs right away when the drain had already started (a second SIGTERM) or
        cannot start: draining is an improvement, stopping is what was asked.
        """
        if not self.start():
            stock_exit()
            return
        try:
            stop_accepting(loop, servers)
            log.info(
                "Draining %s connections for up to %.1fs: not accepting, answering with Connection: close",
                open_connections(),
                self.seconds,
            )
            self.task = loop.create_task(self._wait_then_exit(open_connections, stock_exit, log))
        except Exception as exc:
            log.warning("Drain not started (%r): stopping the stock way", exc)
            stock_exit()

    async def _wait_then_exit(self, open_connections, stock_exit, log) -> None:
        try:
            left = await self.wait(open_connections)
            took = time.monotonic() - (self.started_at or time.monotonic())
            if left:
                log.info("Drain over after %.1fs with %s connections still open", took, left)
            else:
                log.info("Drained in %.2fs", took)
        finally:
            stock_exit()


def stop_accepting(loop, servers) -> None:
    """Stop accepting on asyncio servers, closing them only where that is safe.

    Not `Server.close()` on asyncio's own loop: on Python 3.11 a connection accepted in the same
    loop turn but not yet set up then fails (its transport finds the server closed) and the client
    gets a reset; unwatching the listeners stops the accepting, and the worker's own shutdown
    closes the servers later, when nothing is being accepted. A loop that does not watch listeners
    as readers (uvloop) sets a connection up within its accept, so closing is safe there.
    """
    for server in servers:
        unwatched = 0
        for listener in getattr(server, "sockets", None) or ():
            with contextlib.suppress(NotImplementedError, OSError, ValueError, RuntimeError):
                unwatched += bool(loop.remove_reader(listener.fileno()))
        if not unwatched:
            server.close()


# --- gunicorn's asgi worker --------------------------------------------------------------------


def draining_asgi_protocol(protocol_class: type | None) -> type | None:
    """gunicorn's ASGIProtocol, deciding `Connection: close` for every response once draining.

    The decision is made when a response starts and looked at again when it ends; the second look
    keeps what the first announced, so a connection promised to stay open is not closed under a
    client that is about to use it. None when this gunicorn has no such class or decides elsewhere (the worker then
    retires the stock way).
    """
    if not callable(getattr(protocol_class, "_will_close", None)):
        return None

    class DrainingASGIProtocol(protocol_class):
        # request id -> (request, close) as each response started; a few, since an app call can
        # still be finishing on the connection while the next request is answered.
        _graceful_announced: dict | None = None

        def _will_close(self, request, *args, **kwargs):
            announced = self._graceful_announced
            if announced is None:
                announced = self._graceful_announced = {}
            seen = announced.get(id(request))
            if seen is not None and seen[0] is request:
                return seen[1]
            close = super()._will_close(request, *args, **kwargs)
            drain = getattr(self.worker, "graceful_drain", None)
            close = close or bool(drain is not None and drain.active)
            announced[id(request)] = (request, close)
            while len(announced) > ANNOUNCED_KEPT:
                del announced[next(iter(announced))]
            return close

    DrainingASGIProtocol.__name__ = DrainingASGIProtocol.__qualname__ = protocol_class.__name__
    DrainingASGIProtocol.__module__ = protocol_class.__module__
    return DrainingASGIProtocol


# --- uvicorn -----------------------------------------------------------------------------------


def uvicorn_server_of(handler):
    """The uvicorn Server whose `handle_exit` is installed as this signal handler, if it is one."""
    server = getattr(handler, "__self__", None)
    if server is None or getattr(handler, "__name__", "") != "handle_exit":
        return None
    state = getattr(server, "server_state", None)
    if state is None or not hasattr(state, "connections"):
        return None
    return server


def install_uvicorn_drain(drain: Drain, log) -> bool:
    """Put a drain in front of uvicorn's SIGTERM handler; False if uvicorn's is not in place.

    Called in the worker's event loop once the app is ready, when uvicorn has installed its
    handlers and is about to serve.
    """
    stock_handler = signal.getsignal(signal.SIGTERM)
    server = uvicorn_server_of(stock_handler)
    if server is None:
        return False
    loop = asyncio.get_running_loop()

    def on_sigterm(sig, frame):
        # A signal handler runs between two bytecodes of whatever the loop is doing: hand the
        # work to the loop, which the thread-safe call also wakes up.
        loop.call_soon_threadsafe(
            drain.begin,
            loop,
            getattr(server, "servers", ()),  # set once uvicorn listens, after startup
            lambda: len(server.server_state.connections),
            lambda: stock_handler(sig, frame),
            log,
        )

    signal.signal(signal.SIGTERM, on_sigterm)
    return True
