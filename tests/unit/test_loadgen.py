"""The load client's report: windows, percentiles, failures and the per-host version timeline."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))
import loadgen


def rec(t, ms=1.0, status=200, target="h1:8000", version="1.0.0", error=None):
    r = {"t": t, "ms": ms, "status": status, "target": target, "version": version}
    if error:
        r["error"] = error
    return r


def test_windows_split_on_the_marks_and_count_failures():
    records = [rec(1), rec(2), rec(5, ms=50), rec(6, status=0, error="ConnectionResetError", version=None), rec(9)]
    s = loadgen.summarise(records, (4.0, 7.0))
    assert s["sent"] == 5
    assert s["failed"] == 1
    assert s["before"]["requests"] == 2 and s["before"]["failed"] == 0
    assert s["during"]["requests"] == 2 and s["during"]["failed"] == 1
    assert s["during"]["p99_ms"] == 50
    assert s["after"]["requests"] == 1
    assert s["errors"] == {"ConnectionResetError": 1}


def test_http_errors_count_as_failed():
    s = loadgen.summarise([rec(1, status=502), rec(2)], None)
    assert s["failed"] == 1
    assert s["errors"] == {"HTTP 502": 1}


def test_timeline_records_first_and_last_sight_of_each_version_per_target():
    records = [
        rec(1, version="1.0.0"),
        rec(2, version="1.0.0"),
        rec(3, version="2.0.0"),
        rec(4, version="2.0.0"),
        rec(2.5, target="h2:8000", version="1.0.0"),
    ]
    timeline = loadgen.summarise(records, None)["timeline"]
    assert timeline["h1:8000"]["1.0.0"] == {"first": 1, "last": 2}
    assert timeline["h1:8000"]["2.0.0"] == {"first": 3, "last": 4}
    assert list(timeline["h2:8000"]) == ["1.0.0"]


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.99, 3.0),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5, 5),
        (list(range(1, 101)), 0.99, 99),
    ],
)
def test_percentile(values, fraction, expected):
    assert loadgen.percentile(values, fraction) == expected


def test_non_loopback_target_without_a_bridge_is_refused():
    with pytest.raises(SystemExit, match="no --bridge"):
        loadgen.check_route("192.0.2.10", None)


def test_loopback_target_needs_no_bridge():
    loadgen.check_route("127.0.0.1", None)


def test_retried_requests_count_apart_and_only_their_outcome_counts():
    records = [rec(1), dict(rec(2), retried="RemoteDisconnected"), dict(rec(3, status=0, error="OSError"), retried="x")]
    s = loadgen.summarise(records, None)
    assert s["keepalive_retries"] == 2
    assert s["failed"] == 1


def test_a_server_closing_kept_alive_connections_is_retried_once_not_failed(tmp_path):
    """A real server on loopback that closes every kept-alive connection after one response."""
    import http.server
    import threading

    class CloseAfterOne(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b'{"version": "1.0.0"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()  # no "Connection: close": the client will reuse the connection
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CloseAfterOne)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = tmp_path / "load.jsonl"
        loadgen.main(
            [
                "run",
                "--url",
                f"http://127.0.0.1:{server.server_port}/",
                "--out",
                str(out),
                "--connections",
                "1",
                "--max-requests",
                "20",
                "--seconds",
                "10",
            ]
        )
        s = loadgen.summarise(loadgen.load_records(out), None)
    finally:
        server.shutdown()
        server.server_close()
    assert s["sent"] == 20
    assert s["failed"] == 0
    assert s["keepalive_retries"] >= 1
