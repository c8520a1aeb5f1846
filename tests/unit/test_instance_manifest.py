"""Options left unset are completed from the role's instance manifest; explicit options always win."""

import json
import os

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common

MANIFEST = {
    "instance": "shop",
    "workers": 4,
    "unit": "gunicorn-shop.service",
    "pidfile": "/run/gunicorn-shop/master.pid",
    "control_socket": "/run/gunicorn-shop/gunicorn.ctl",
    "health": {
        "enabled": True,
        "url": "http://127.0.0.1:8000",
        "socket": "",
        "path": "/healthz",
        "url_prefix": "/shop",
        "expected_status": [200, 204],
    },
}


def blank(**overrides):
    params = {key: None for key in common.common_argument_spec()}
    params.update(instance="shop")
    params.update(overrides)
    return params


@pytest.mark.parametrize(
    ("overrides", "manifest", "expected"),
    [
        # everything from the manifest
        (
            {},
            MANIFEST,
            {
                "health_url": "http://127.0.0.1:8000",
                "health_socket": None,
                "health_path": "/healthz",
                "url_prefix": "/shop",
                "expected_status": [200, 204],
                "workers": 4,
            },
        ),
        # explicit options win, the rest still comes from the manifest
        (
            {"health_path": "/ping", "workers": 2},
            MANIFEST,
            {"health_path": "/ping", "workers": 2, "url_prefix": "/shop"},
        ),
        # an explicit socket keeps the manifest's URL out
        ({"health_socket": "/run/x.sock"}, MANIFEST, {"health_socket": "/run/x.sock", "health_url": None}),
        # a unix-socket instance
        (
            {},
            dict(MANIFEST, health=dict(MANIFEST["health"], url="", socket="/run/gunicorn-shop/gunicorn.sock")),
            {"health_socket": "/run/gunicorn-shop/gunicorn.sock", "health_url": None},
        ),
        # health checks disabled in the role: no target, defaults for the rest
        (
            {},
            dict(MANIFEST, health=dict(MANIFEST["health"], enabled=False)),
            {"health_url": None, "health_socket": None, "health_path": "/healthz"},
        ),
        # no manifest: built-in defaults
        (
            {},
            None,
            {"health_url": None, "health_path": "/health", "url_prefix": "", "expected_status": [200], "workers": None},
        ),
        # an empty prefix in the manifest is a value, not a gap
        ({}, dict(MANIFEST, health=dict(MANIFEST["health"], url_prefix="")), {"url_prefix": ""}),
    ],
)
def test_apply_manifest(overrides, manifest, expected):
    params = common.apply_manifest(blank(**overrides), manifest)
    for key, value in expected.items():
        assert params[key] == value, key


def test_manifest_paths_and_targets_fill_only_gaps():
    params = common.apply_manifest(blank(pidfile="/tmp/other.pid"), MANIFEST)
    assert params["pidfile"] == "/tmp/other.pid"
    assert params["unit"] == "gunicorn-shop.service"


def test_manifest_is_read_beside_the_config(tmp_path):
    (tmp_path / "instance.json").write_text(json.dumps(MANIFEST))
    params = common.load_params(blank(config=str(tmp_path / "gunicorn.conf.py")))
    assert params["health_url"] == "http://127.0.0.1:8000"
    assert params["workers"] == 4


@pytest.mark.parametrize("content", ["not json", "[1, 2]", ""])
def test_unreadable_manifest_leaves_the_defaults(tmp_path, content):
    (tmp_path / "instance.json").write_text(content)
    params = common.load_params(blank(config=str(tmp_path / "gunicorn.conf.py")))
    assert params["health_url"] is None
    assert params["health_path"] == "/health"


def test_default_manifest_path_follows_the_instance():
    assert common.manifest_path({"instance": "api", "config": None}) == "/etc/gunicorn/api/instance.json"
    assert common.manifest_path({"instance": None, "config": None}) is None


class Failed(Exception):
    pass


class FakeModule:
    def __init__(self, params):
        self.params = params

    def fail_json(self, msg, **_result):
        raise Failed(msg)


def test_an_untrusted_manifest_fails_the_module_before_anything_is_done(tmp_path):
    manifest = tmp_path / "instance.json"
    manifest.write_text(json.dumps(MANIFEST))
    os.chmod(manifest, 0o664)
    with pytest.raises(Failed, match=r"invalid options: instance manifest not trusted: .* group- or world-writable"):
        common.checked_options(FakeModule(blank(config=str(tmp_path / "gunicorn.conf.py"))))


def test_values_from_the_manifest_pass_the_option_checks(tmp_path):
    (tmp_path / "instance.json").write_text(json.dumps(dict(MANIFEST, pidfile="/run/../etc/shadow")))
    module = FakeModule(blank(instance=None, pidfile=None, unit=None, config=str(tmp_path / "gunicorn.conf.py")))
    module.params["instance"] = "shop"
    with pytest.raises(Failed, match=r"from the instance manifest .*: pidfile must be an absolute path"):
        common.checked_options(module)
