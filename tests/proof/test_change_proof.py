"""The change proof's own parts: how it names what ran, the load client's stop-on-close, the example apps' /."""

import asyncio
import hashlib
import http.server
import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "apps" / "wsgi"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "apps" / "asgi"))
import change_proof
import graceful_demo_asgi
import graceful_demo_wsgi
import loadgen

SERVICE = change_proof.SERVICE


def state(invocation="a", active="active"):
    return {"unit": {"InvocationID": invocation, "ActiveState": active}}


def systemd(message):
    return {"MESSAGE": message, "_PID": "1", "UNIT": f"{SERVICE}.service"}


def master(message, pid="4242"):
    return {"MESSAGE": message, "_PID": pid}


@pytest.mark.parametrize(
    ("journal", "before", "after", "expected"),
    [
        ([master("Handling signal: hup")], state(), state(), "reload"),
        ([master("Hang up: Master"), master("Refresh 1 (hup): replacing 4 workers")], state(), state(), "reload"),
        ([master("Handling signal: usr2"), master("Handling signal: term", "99")], state(), state(), "upgrade"),
        ([master("USR2: new master forked (pid:77)"), master("Master has been promoted.", "77")],
         state(), state(), "upgrade"),
        ([systemd("Stopping gunicorn-change.service - app..."), systemd("Started gunicorn-change.service - app.")],
         state("a"), state("b"), "restart"),
        ([master("Handling signal: usr2"), systemd("Stopping x"), systemd("Started x")],
         state("a"), state("b"), "upgrade+restart"),
        ([systemd("Stopping gunicorn-change.service")], state("a"), state("", "inactive"), "stop"),
        ([systemd("Stopping x"), systemd("Stopped x")], state("a"), state("", "inactive"), "stop"),
        ([systemd("Stopped x"), systemd("Starting x"), systemd("Started x")], state("a"), state("b"), "restart"),
        ([], state("a"), state("b"), "restart"),
        ([], state("a"), state("a"), "none"),
        # another unit's messages and systemd lines about other units do not count
        ([{"MESSAGE": "Stopping other.service", "_PID": "1", "UNIT": "other.service"}], state(), state(), "none"),
    ],
)  # fmt: skip
def test_action_is_read_from_the_journal_and_the_invocation(journal, before, after, expected):
    assert change_proof.actions(journal, before, after) == expected


class _ClosingHandler(http.server.BaseHTTPRequestHandler):
    """Keep-alive, then `Connection: close` on each connection's third response."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.count = getattr(self, "count", 0) + 1
        body = json.dumps({"version": "1"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.count >= 3:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def closing_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_stop_on_close_ends_each_client_at_the_servers_close(closing_server, tmp_path):
    out = tmp_path / "load.jsonl"
    started = time.monotonic()
    argv = ["run", "--url", closing_server, "--out", str(out), "--connections", "2", "--seconds", "20"]
    assert loadgen.main([*argv, "--stop-on-close"]) == 0
    assert time.monotonic() - started < 10
    records = loadgen.load_records(out)
    assert len(records) == 6 and all(r["status"] == 200 for r in records)


def test_without_stop_on_close_clients_reconnect(closing_server, tmp_path):
    out = tmp_path / "load.jsonl"
    argv = ["run", "--url", closing_server, "--out", str(out), "--connections", "2", "--seconds", "1"]
    assert loadgen.main(argv) == 0
    assert len(loadgen.load_records(out)) > 6


def wsgi_root(monkeypatch, **environ):
    for name in ("DEMO_GREETING", "DEMO_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    status = []
    body = graceful_demo_wsgi.app(
        {"PATH_INFO": "/", "SERVER_SOFTWARE": "gunicorn/27.0.1"}, lambda s, h: status.append(s)
    )
    assert status == ["200 OK"]
    return json.loads(b"".join(body))


def asgi_root(monkeypatch, **environ):
    for name in ("DEMO_GREETING", "DEMO_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(graceful_demo_asgi.app({"type": "http", "path": "/"}, receive, send))
    assert sent[0]["status"] == 200
    return json.loads(sent[1]["body"])


@pytest.mark.parametrize("root", [wsgi_root, asgi_root])
def test_root_shows_the_environment_of_each_request_and_only_a_digest_of_the_secret(root, monkeypatch):
    unset = root(monkeypatch)
    assert unset["greeting"] is None and unset["secret_sha256"] is None
    first = root(monkeypatch, DEMO_GREETING="hello", DEMO_SECRET="s3cret-one")
    assert first["greeting"] == "hello"
    assert first["secret_sha256"] == hashlib.sha256(b"s3cret-one").hexdigest()[:12]
    assert "s3cret-one" not in json.dumps(first)
    rotated = root(monkeypatch, DEMO_GREETING="hello again", DEMO_SECRET="s3cret-two")
    assert rotated["greeting"] == "hello again"
    assert rotated["secret_sha256"] != first["secret_sha256"]


def test_wsgi_root_names_the_server_software(monkeypatch):
    assert wsgi_root(monkeypatch)["server_software"] == "gunicorn/27.0.1"
