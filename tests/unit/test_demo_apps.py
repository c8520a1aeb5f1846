"""The example apps' per-host drills: a release that fails to import, or only its health, on one host."""

import asyncio
import importlib
import sys
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parents[2] / "examples" / "apps"


def load(kind, monkeypatch, **environment):
    """A fresh import of the example app of this kind under the given environment."""
    monkeypatch.syspath_prepend(str(APPS / kind))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    module_name = f"graceful_demo_{kind}"
    sys.modules.pop(module_name, None)
    module = importlib.import_module(module_name)
    monkeypatch.delitem(sys.modules, module_name)
    return module


def wsgi_status(app, path):
    seen = []
    app({"PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": ""}, lambda status, headers: seen.append(status))
    return int(seen[0].split()[0])


def asgi_status(app, path):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "GET", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]


STATUS = {"wsgi": lambda module, path: wsgi_status(module.app, path), "asgi": lambda m, p: asgi_status(m.app, p)}


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_release_listed_as_unhealthy_imports_but_fails_its_health(kind, monkeypatch):
    module = load(kind, monkeypatch, DEMO_UNHEALTHY_VERSIONS=f"0.1.0,{load(kind, monkeypatch).__version__}")
    assert STATUS[kind](module, "/health") == 500
    assert STATUS[kind](module, "/version") == 200


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_other_releases_stay_healthy_and_a_broken_one_fails_to_import(kind, monkeypatch):
    version = load(kind, monkeypatch).__version__
    assert STATUS[kind](load(kind, monkeypatch, DEMO_UNHEALTHY_VERSIONS="0.1.0"), "/health") == 200
    with pytest.raises(RuntimeError, match="DEMO_BROKEN_VERSIONS"):
        load(kind, monkeypatch, DEMO_BROKEN_VERSIONS=version)
