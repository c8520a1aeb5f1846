"""The collection's list of gunicorn setting names against the installed gunicorn and arbiter."""

import ast
from pathlib import Path

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_settings as gs

ARBITER_SRC = Path(__file__).resolve().parents[2] / "arbiter" / "src"


def test_list_matches_installed_gunicorn():
    config = pytest.importorskip("gunicorn.config")
    import gunicorn

    installed = [s.name for s in config.KNOWN_SETTINGS if s.name not in gs.ARBITER_SETTINGS]
    if gunicorn.__version__ != gs.GUNICORN_VERSION:
        pytest.fail(
            f"installed gunicorn is {gunicorn.__version__} but the list is for {gs.GUNICORN_VERSION}: "
            "regenerate GUNICORN_SETTINGS"
        )
    assert set(installed) - set(gs.GUNICORN_SETTINGS) == set(), "settings missing from the list"
    assert set(gs.GUNICORN_SETTINGS) - set(installed) == set(), "names gunicorn does not know"
    assert list(gs.GUNICORN_SETTINGS) == installed


def in_tree_arbiter_settings():
    """The `name` of every Setting subclass in the in-tree arbiter source, which the role installs.

    Read from the source text: importing a second copy of the module would register its settings
    with gunicorn twice in this process.
    """
    tree = ast.parse((ARBITER_SRC / "graceful_arbiter" / "settings.py").read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(base, "attr", None) == "Setting" for base in node.bases):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and [t.id for t in stmt.targets if isinstance(t, ast.Name)] == ["name"]:
                    names.append(stmt.value.value)
    return names


def test_list_matches_bundled_arbiter():
    names = in_tree_arbiter_settings()
    assert len(names) >= 10, "no Setting classes found in the arbiter's settings.py"
    assert sorted(gs.ARBITER_SETTINGS) == sorted(names), "update ARBITER_SETTINGS in gunicorn_settings.py"


def test_no_duplicates():
    assert len(gs.GUNICORN_SETTINGS) == len(set(gs.GUNICORN_SETTINGS))
    assert not set(gs.GUNICORN_SETTINGS) & set(gs.ARBITER_SETTINGS)


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        ("worker", "workers"),
        ("workres", "workers"),
        ("graceful_timout", "graceful_timeout"),
        ("max_request", "max_requests"),
        ("preload", "preload_app"),
        ("Keepalive", "keepalive"),
        ("max-requests-jitter", "max_requests_jitter"),
        ("worker_refresh_intervall", "worker_refresh_interval"),
    ],
)
def test_suggestions(typo, expected):
    assert gs.nearest_setting(typo) == expected
    assert gs.unknown_settings([typo]) == [{"name": typo, "suggestion": expected}]


def test_no_suggestion_when_nothing_is_close():
    assert gs.unknown_settings(["zzzzzz"]) == [{"name": "zzzzzz", "suggestion": None}]


def test_known_names_pass_and_order_is_kept():
    names = ["timeout", "wokers", "keepalive", "bnd", "worker_boot_timeout"]
    assert [u["name"] for u in gs.unknown_settings(names)] == ["wokers", "bnd"]


def test_extra_names_are_accepted():
    assert gs.unknown_settings(["my_hook_setting"], extra=["my_hook_setting"]) == []
