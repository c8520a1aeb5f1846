"""The master's HUP path on real sockets and a real gunicorn Config, without starting a master.

The arbiter object is made without its __init__ (which would install signal handlers and a pipe):
only the attributes these methods read are set.
"""

import os
import socket

import pytest
from gunicorn.config import Config

from graceful_arbiter import envfile, listeners
from graceful_arbiter.arbiter import GracefulArbiter


class Log:
    def __init__(self):
        self.lines = []

    def _add(self, level, msg, *args):
        self.lines.append((level, msg % args if args else msg))

    def info(self, msg, *args):
        self._add("info", msg, *args)

    def warning(self, msg, *args):
        self._add("warning", msg, *args)

    def error(self, msg, *args):
        self._add("error", msg, *args)

    def text(self) -> str:
        return "\n".join(line for _level, line in self.lines)


def configured(binds) -> Config:
    cfg = Config()
    cfg.set("bind", binds)
    return cfg


def bare_arbiter(cfg, current) -> GracefulArbiter:
    arbiter = GracefulArbiter.__new__(GracefulArbiter)
    arbiter.cfg, arbiter.log, arbiter.LISTENERS = cfg, Log(), list(current)
    arbiter.systemd, arbiter.reexec_pid, arbiter.master_pid = False, 0, 0
    arbiter._binds_incomplete = False
    return arbiter


@pytest.fixture
def opened():
    made = []
    yield made
    for listener in made:
        listener.close()


def open_listener(address, opened):
    listener = listeners.bind(address, configured([]), Log())
    opened.append(listener)
    return listener


def test_a_removed_unix_socket_whose_file_is_gone_closes_and_the_rest_goes_on(tmp_path, opened):
    first, second = str(tmp_path / "first.sock"), str(tmp_path / "second.sock")
    kept, gone_a, gone_b = (open_listener(path, opened) for path in (str(tmp_path / "kept.sock"), first, second))
    os.unlink(first)  # removed by hand (or by a cleanup) before the HUP that drops the bind
    arbiter = bare_arbiter(configured([f"unix:{tmp_path / 'kept.sock'}"]), [kept, gone_a, gone_b])
    arbiter._update_listeners()
    assert arbiter.LISTENERS[:] == [kept]
    assert gone_a.sock is None and gone_b.sock is None  # gunicorn's close() drops the socket
    assert not os.path.exists(second)
    assert "closed 2" in arbiter.log.text()


class ReloadingApp:
    """gunicorn's application object as far as a HUP uses it: reload() builds a new Config."""

    def __init__(self, binds):
        self.binds = binds
        self.cfg = configured(binds)

    def reload(self):
        self.cfg = configured(self.binds)


def hup(arbiter):
    """_reload_configuration with setup() reduced to what it does to `cfg` (no workers, no logs)."""
    arbiter.setup = lambda app: setattr(arbiter, "cfg", app.cfg)
    arbiter.log.reopen_files = lambda: None
    arbiter._environment = None
    arbiter._reload_configuration()


def test_an_address_not_bound_at_one_hup_is_bound_at_the_next(opened, monkeypatch):
    monkeypatch.delenv(envfile.FILE_ENV, raising=False)
    kept = open_listener(("127.0.0.1", 0), opened)
    kept_port = kept.getsockname()[1]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    app = ReloadingApp([f"127.0.0.1:{kept_port}"])
    arbiter = bare_arbiter(app.cfg, [kept])
    arbiter.app = app
    try:
        app.binds = [f"127.0.0.1:{busy_port}"]
        hup(arbiter)
        assert arbiter.LISTENERS[:] == [kept] and kept.sock is not None
        assert "no listener closed" in arbiter.log.text()
    finally:
        busy.close()
    # The next HUP has the same `bind` (nothing in the configuration changed) and tries again.
    hup(arbiter)
    opened.extend(arbiter.LISTENERS)
    assert [lnr.getsockname() for lnr in arbiter.LISTENERS] == [("127.0.0.1", busy_port)]
    assert kept.sock is None
    assert "(added 1, closed 1)" in arbiter.log.text()


class FailingApp:
    def __init__(self, cfg):
        self.cfg = cfg

    def reload(self):
        raise SyntaxError("gunicorn.conf.py line 3")


def test_a_configuration_that_does_not_reload_leaves_the_environment_and_says_so(tmp_path, monkeypatch):
    env_file = tmp_path / "environment"
    env_file.write_text('DEMO_SECRET="old"\n')
    monkeypatch.setenv(envfile.FILE_ENV, str(env_file))
    monkeypatch.setenv("DEMO_SECRET", "old")
    monkeypatch.setenv(envfile.KEYS_ENV, "DEMO_SECRET")
    cfg = configured([])
    arbiter = bare_arbiter(cfg, [])
    arbiter.app = FailingApp(cfg)
    arbiter._environment = {"file": str(env_file), "names": 1, "outcome": "applied", "error": None, "at": 0}
    env_file.write_text('DEMO_SECRET="new"\n')
    with pytest.raises(SyntaxError):
        arbiter._reload_configuration()
    assert os.environ["DEMO_SECRET"] == "old"
    assert arbiter._environment["outcome"] == "not applied"
    assert "new" not in repr(arbiter._environment)
