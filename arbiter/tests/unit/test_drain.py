"""Draining a retiring asyncio worker: the decisions, without processes."""

import asyncio
import signal
import time

import pytest

from graceful_arbiter import drain


@pytest.mark.parametrize(("graceful_timeout", "expected"), [(30, 15.0), (10, 5.0), (0, 0.0), (-1, 0.0)])
def test_drain_leaves_half_the_graceful_timeout_for_the_workers_own_exit(graceful_timeout, expected):
    assert drain.drain_seconds(graceful_timeout) == expected
    assert drain.Drain.for_graceful_timeout(graceful_timeout).seconds == expected


def test_close_header_is_added_once():
    assert drain.with_close_header([(b"content-type", b"text/plain")]) == [
        (b"content-type", b"text/plain"),
        (b"connection", b"close"),
    ]
    already = [(b"Connection", b"Close")]
    assert drain.with_close_header(already) == already
    assert drain.with_close_header(None) == [(b"connection", b"close")]


def test_responses_starting_during_the_drain_announce_close():
    sent = []

    async def send(message):
        sent.append(message)

    async def respond(d):
        closing = d.closing_send(send)
        await closing({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
        await closing({"type": "http.response.body", "body": b"ok"})

    d = drain.Drain(1.0)
    asyncio.run(respond(d))
    assert d.start() and not d.start(), "a drain starts once"
    asyncio.run(respond(d))
    assert sent[0]["headers"] == [(b"x", b"1")]
    assert sent[2]["headers"] == [(b"x", b"1"), (b"connection", b"close")]
    assert sent[1] == sent[3] == {"type": "http.response.body", "body": b"ok"}


def test_wait_ends_when_the_last_connection_closes_or_at_the_deadline():
    open_connections = [3]

    async def close_one_by_one():
        while open_connections[0]:
            await asyncio.sleep(0.03)
            open_connections[0] -= 1

    async def drained():
        d = drain.Drain(5.0)
        d.start()
        closer = asyncio.ensure_future(close_one_by_one())
        left = await d.wait(lambda: open_connections[0])
        await closer
        return left

    assert asyncio.run(drained()) == 0

    stuck = drain.Drain(0.2)
    started = time.monotonic()
    stuck.start()
    assert asyncio.run(stuck.wait(lambda: 2)) == 2
    assert 0.2 <= time.monotonic() - started < 2


class StockProtocol:
    """Stands in for gunicorn's ASGIProtocol: the stock decision is keep-alive unless told."""

    def __init__(self, worker):
        self.worker = worker

    def _will_close(self, request, response_requires_close, *more):
        return response_requires_close


class Worker:
    graceful_drain = None


def test_asgi_protocol_keeps_what_a_response_announced_and_closes_the_next_one():
    protocol_class = drain.draining_asgi_protocol(StockProtocol)
    assert protocol_class.__name__ == "StockProtocol" and issubclass(protocol_class, StockProtocol)
    worker = Worker()
    worker.graceful_drain = drain.Drain(1.0)
    protocol = protocol_class(worker)
    under_way, next_request = object(), object()

    assert protocol._will_close(under_way, False) is False  # headers written: keep-alive
    worker.graceful_drain.start()
    # The second look when that response ends keeps its promise; the connection stays open.
    assert protocol._will_close(under_way, False) is False
    # The next request on the connection is answered with Connection: close.
    assert protocol._will_close(next_request, False) is True
    assert protocol._will_close(next_request, False) is True
    assert protocol._will_close(object(), True, "a later gunicorn's extra argument") is True


def test_asgi_protocol_keeps_each_promise_while_an_earlier_call_finishes():
    """An app call still running after its response makes its second look after the next
    request's first: each request keeps what its own response announced."""
    worker = Worker()
    worker.graceful_drain = drain.Drain(1.0)
    protocol = drain.draining_asgi_protocol(StockProtocol)(worker)
    earlier, later = object(), object()
    assert protocol._will_close(earlier, False) is False
    assert protocol._will_close(later, False) is False
    worker.graceful_drain.start()
    assert protocol._will_close(earlier, False) is False
    assert protocol._will_close(later, False) is False
    for _request in range(drain.ANNOUNCED_KEPT * 2):
        protocol._will_close(object(), False)
    assert len(protocol._graceful_announced) == drain.ANNOUNCED_KEPT


def test_asgi_protocol_without_the_decision_method_retires_the_stock_way():
    assert drain.draining_asgi_protocol(object) is None


def test_uvicorn_handler_is_recognised_only_when_it_is_uvicorns():
    class ServerState:
        connections: set = set()

    class Server:
        server_state = ServerState()

        def handle_exit(self, sig, frame):
            pass

        def other(self, sig, frame):
            pass

    server = Server()
    assert drain.uvicorn_server_of(server.handle_exit) is server
    assert drain.uvicorn_server_of(server.other) is None
    assert drain.uvicorn_server_of(signal.SIG_DFL) is None
    assert drain.uvicorn_server_of(lambda sig, frame: None) is None


def test_stop_accepting_unwatches_listeners_without_closing_them():
    import socket

    async def scenario():
        loop = asyncio.get_running_loop()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = await loop.create_server(asyncio.Protocol, sock=listener)
        try:
            drain.stop_accepting(loop, [server])
            readers = loop._selector.get_map()  # asyncio's own loop: what it watches
            watched = any(key.fd == listener.fileno() for key in readers.values())
            return watched, server.is_serving()
        finally:
            server.close()
            await server.wait_closed()

    watched, serving = asyncio.run(scenario())
    assert not watched, "the listener is no longer watched: nothing more is accepted"
    assert serving, "the server stays open so that a connection being set up is not failed"


def test_stop_accepting_closes_a_server_whose_loop_does_not_watch_listeners():
    class Loop:
        def remove_reader(self, fd):
            return False

    class Server:
        sockets = ("listener",)
        closed = False

        def close(self):
            self.closed = True

    class Listener:
        def fileno(self):
            return 7

    server = Server()
    server.sockets = (Listener(),)
    drain.stop_accepting(Loop(), [server])
    assert server.closed


def test_begin_drains_then_exits_and_a_second_sigterm_exits_at_once():
    import logging

    exits = []
    open_connections = [1]

    async def scenario():
        loop = asyncio.get_running_loop()
        d = drain.Drain(5.0)
        d.begin(loop, [], lambda: open_connections[0], lambda: exits.append("after drain"), logging.getLogger("t"))
        await asyncio.sleep(0.05)
        assert exits == [], "the worker's own exit waits for the open connection"
        d.begin(loop, [], lambda: open_connections[0], lambda: exits.append("second"), logging.getLogger("t"))
        open_connections[0] = 0
        await d.task

    asyncio.run(scenario())
    assert exits == ["second", "after drain"]


def test_begin_falls_back_to_the_stock_exit_when_the_drain_cannot_start():
    import logging

    exits = []

    class BrokenLoop:
        def remove_reader(self, fd):
            raise RuntimeError("not this loop")

        def create_task(self, coro):
            coro.close()
            raise RuntimeError("closed")

    drain.Drain(5.0).begin(BrokenLoop(), [], lambda: 0, lambda: exits.append("stock"), logging.getLogger("t"))
    assert exits == ["stock"]
