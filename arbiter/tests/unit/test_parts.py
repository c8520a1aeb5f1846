"""Settings registration, wire protocol, readiness probes, memory parsing."""

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from gunicorn.config import KNOWN_SETTINGS, Config

from graceful_arbiter import client, memory, readiness, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples/apps/wsgi"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples/apps/asgi"))


def test_setting_names_match_what_is_registered():
    registered = tuple(s.name for s in KNOWN_SETTINGS if s.section == settings.SECTION)
    assert registered == settings.SETTING_NAMES
    assert len(set(settings.SETTING_NAMES)) == len(settings.SETTING_NAMES)
    cfg = Config()
    for name in settings.SETTING_NAMES:
        assert name in cfg.settings


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("worker_max_memory", "512M", 512 * 1024**2),
        ("worker_max_memory", "1.5G", int(1.5 * 1024**3)),
        ("worker_max_memory", 1000, 1000),
        ("worker_max_memory_metric", "RSS", "rss"),
        ("worker_health_path", "", None),
        ("worker_refresh_interval", "3600", 3600.0),
        ("worker_refresh_on_change", "/srv/app/current", ["/srv/app/current"]),
    ],
)
def test_setting_validation(name, value, expected):
    cfg = Config()
    cfg.set(name, value)
    assert getattr(cfg, name) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [("worker_max_memory_metric", "vss"), ("worker_health_path", "health"), ("worker_refresh_batch_size", 0)],
)
def test_setting_validation_rejects(name, value):
    with pytest.raises((ValueError, TypeError)):
        Config().set(name, value)


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("/run/gunicorn-app/control.sock", "/run/gunicorn-app/control.42.sock"),
        ("/tmp/gunicorn.ctl", "/tmp/gunicorn.42.ctl"),
        ("/tmp/ctl", "/tmp/ctl.42"),
    ],
)
def test_master_socket_path(configured, expected):
    assert client.master_socket_path(configured, 42) == expected


def test_client_speaks_gunicorns_ctl_framing(tmp_path):
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    seen = {}

    def serve():
        conn, _peer = server.accept()
        with conn:
            (length,) = struct.unpack(">I", conn.recv(4))
            seen.update(json.loads(conn.recv(length)))
            body = json.dumps({"id": 1, "status": "ok", "data": {"hello": "world"}}).encode()
            conn.sendall(struct.pack(">I", len(body)) + body)

    thread = threading.Thread(target=serve)
    thread.start()
    assert client.request(path, "graceful status") == {"hello": "world"}
    thread.join()
    server.close()
    assert seen["command"] == "graceful status"


def test_client_raises_on_error_reply(tmp_path):
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve():
        conn, _peer = server.accept()
        with conn:
            conn.recv(1024)
            body = json.dumps({"id": 1, "status": "error", "error": "nope"}).encode()
            conn.sendall(struct.pack(">I", len(body)) + body)

    thread = threading.Thread(target=serve)
    thread.start()
    with pytest.raises(client.ControlError, match="nope"):
        client.request(path, "graceful bogus")
    thread.join()
    server.close()


def test_reports_round_trip(monkeypatch):
    r, w = os.pipe()
    monkeypatch.setattr(readiness, "REPORT_FD", w)
    readiness.report(True, "GET /health: 200 OK")
    readiness.report(False, "GET /health answered\n500")
    os.close(w)
    reports = readiness.parse_reports(os.read(r, 4096))
    os.close(r)
    assert reports == [(os.getpid(), True, "GET /health: 200 OK"), (os.getpid(), False, "GET /health answered 500")]


def test_parse_reports_ignores_garbage():
    assert readiness.parse_reports(b"x ok\n12 maybe\n13 ok\n") == [(13, True, "")]


def test_wsgi_probe_with_demo_app():
    import graceful_demo_wsgi

    assert readiness.call_wsgi(graceful_demo_wsgi.app, "/health", "localhost")[0] is True
    ok, detail = readiness.call_wsgi(graceful_demo_wsgi.app, "/nope", "localhost")
    assert not ok and "404" in detail

    def broken(environ, start_response):
        raise RuntimeError("db down")

    ok, detail = readiness.call_wsgi(broken, "/health", "localhost")
    assert not ok and "db down" in detail


def test_asgi_gate_checks_health_before_startup_completes(monkeypatch):
    import graceful_demo_asgi

    reported = []
    monkeypatch.setattr(readiness, "report", lambda ok, detail="": reported.append(ok))
    for path, expected in (("/health", "lifespan.startup.complete"), ("/missing", "lifespan.startup.failed")):
        gate = readiness.AsgiReadinessGate(graceful_demo_asgi.app, path, "localhost", 5)
        sent = []

        async def run(gate, sent):
            queue = asyncio.Queue()
            await queue.put({"type": "lifespan.startup"})

            async def send(message):
                sent.append(message["type"])
                await queue.put({"type": "lifespan.shutdown"})

            await gate({"type": "lifespan", "state": {}}, queue.get, send)

        asyncio.run(run(gate, sent))
        assert sent[0] == expected
    assert reported == [True, False]


def test_asgi_probe_times_out():
    async def hangs(scope, receive, send):
        await asyncio.sleep(10)

    ok, detail = asyncio.run(readiness.call_asgi(hangs, "/health", "localhost", None, 0.1))
    assert not ok and "did not answer" in detail


def test_is_asgi_worker():
    from gunicorn.workers.gasgi import ASGIWorker
    from gunicorn.workers.gthread import ThreadWorker
    from uvicorn_worker import UvicornWorker

    assert readiness.is_asgi_worker(ASGIWorker) and readiness.is_asgi_worker(UvicornWorker)
    assert not readiness.is_asgi_worker(ThreadWorker)
    assert readiness.is_gunicorn_asgi_worker(ASGIWorker) and not readiness.is_gunicorn_asgi_worker(UvicornWorker)
    wrapped = readiness.with_readiness(ThreadWorker)
    assert issubclass(wrapped, ThreadWorker) and readiness.with_readiness(wrapped) is wrapped
    assert wrapped.__name__ == "ThreadWorker"


def test_smaps_rollup_parsing_and_own_usage():
    text = "55d0-7ff [rollup]\nRss:               27056 kB\nPss:               14192 kB\nPss_Anon: 1 kB\n"
    assert memory.parse_smaps_rollup(text) == {"rss": 27056 * 1024, "pss": 14192 * 1024}
    usage = memory.read_usage(os.getpid())
    assert usage["rss"] > 0


class TestReexecCommand:
    """USR2 re-executes through the path the unit gave, so a moved `current` link picks the new release."""

    def make_venv(self, root, name):
        bin_dir = root / name / "venv" / "bin"
        bin_dir.mkdir(parents=True)
        python = bin_dir / "python"
        python.write_text("#!/bin/sh\n")
        python.chmod(0o755)
        script = bin_dir / "graceful-gunicorn"
        script.write_text("#!/srv/x/releases/1.0.0/venv/bin/python3\n")
        return bin_dir

    def test_console_script_reexecs_the_python_beside_it_through_the_link(self, tmp_path):
        from graceful_arbiter.arbiter import reexec_command

        self.make_venv(tmp_path, "releases/1.0.0")
        (tmp_path / "current").symlink_to(tmp_path / "releases/1.0.0")
        script = str(tmp_path / "current/venv/bin/graceful-gunicorn")
        argv = [script, "-c", "/etc/gunicorn/demo/gunicorn.conf.py", "app:app"]
        python, args = reexec_command(argv, str(tmp_path / "releases/1.0.0/venv/bin/python3"))
        assert python == str(tmp_path / "current/venv/bin/python")
        assert args == [python, *argv]

    def test_without_a_venv_bin_sibling_the_running_interpreter_is_kept(self, tmp_path):
        from graceful_arbiter.arbiter import reexec_command

        argv = [str(tmp_path / "tool.py"), "app:app"]
        assert reexec_command(argv, "/usr/bin/python3") == ("/usr/bin/python3", ["/usr/bin/python3", *argv])

    def test_relative_script_path_is_left_alone(self):
        from graceful_arbiter.arbiter import reexec_command

        assert reexec_command(["bin/graceful-gunicorn"], "/py")[0] == "/py"


class TestCheckConfig:
    """`graceful-gunicorn --check-config` validates settings and the app, then exits without serving."""

    APP_DIR = Path(__file__).resolve().parents[3] / "examples" / "apps" / "wsgi"

    def check(self, tmp_path, conf_text):
        conf = tmp_path / "gunicorn.conf.py"
        conf.write_text(conf_text)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "graceful_arbiter.launcher",
                "--check-config",
                "-c",
                str(conf),
                "--chdir",
                str(self.APP_DIR),
                "graceful_demo_wsgi:app",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def test_valid_config_and_app_pass(self, tmp_path):
        result = self.check(tmp_path, "workers = 2\nworker_refresh_interval = 30\nbind = ['127.0.0.1:1']\n")
        assert result.returncode == 0, result.stderr

    def test_bad_value_of_a_graceful_setting_fails(self, tmp_path):
        result = self.check(tmp_path, "worker_refresh_interval = 'often'\n")
        assert result.returncode != 0
        assert "worker_refresh_interval" in result.stderr + result.stdout

    def test_app_that_fails_to_import_fails(self, tmp_path, monkeypatch):
        monkeypatch.setenv("DEMO_BEHAVIOUR", "import-error")
        result = self.check(tmp_path, "workers = 1\n")
        assert result.returncode == 1
        assert "import fails on purpose" in result.stderr


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), ("bye", 1)])
def test_worker_exit_runs_atexit_handlers_and_skips_the_teardown(tmp_path, code, status):
    script = tmp_path / "leave.py"
    script.write_text(
        "import atexit, sys\n"
        "from graceful_arbiter.arbiter import exit_without_teardown\n"
        "class Noisy:\n"
        "    def __del__(self):\n"
        "        sys.stdout.write('teardown ran\\n')\n"
        "kept = Noisy()\n"
        "atexit.register(lambda: sys.stdout.write('atexit ran\\n'))\n"
        "sys.stdout.write('buffered ')\n"
        f"exit_without_teardown({code!r})\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == status, done.stderr
    assert done.stdout == "buffered atexit ran\n", "atexit handlers run and streams are flushed, no teardown"
    if isinstance(code, str):
        assert code in done.stderr


def _signalled(sig: int) -> int:
    return sig  # a wait status for "killed by sig" (no core dump)


def _exited(code: int) -> int:
    return code << 8


@pytest.mark.parametrize(
    ("status", "stop_requested", "killed_by_master", "expected"),
    [
        (_signalled(15), True, False, ("info", "stopped on the SIGTERM it was sent")),
        (_exited(0), True, False, ("info", "exited with code 0")),
        (_signalled(9), True, True, ("warning", "killed by SIGKILL (sent by the master)")),
        (_signalled(15), False, False, ("error", "killed by SIGTERM")),
        (_exited(3), False, False, ("error", "exited with code 3 (worker failed to boot)")),
        (_exited(0), False, False, ("info", "exited with code 0")),
        (_signalled(11), True, False, ("warning", "killed by SIGSEGV")),
    ],
)
def test_describe_worker_exit(status, stop_requested, killed_by_master, expected):
    from graceful_arbiter.arbiter import describe_worker_exit

    assert describe_worker_exit(status, stop_requested, killed_by_master) == expected
