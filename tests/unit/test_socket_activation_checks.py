"""The role's checks of the socket activation and restart variables (graceful.gunicorn.instance_problems)."""

import pytest

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import instance_problems

BASE = {
    "gunicorn_instance": "api",
    "gunicorn_app": "myapi.main:app",
    "gunicorn_app_packages": ["myapi==1.2.3"],
    "gunicorn_user": "gunicorn-api",
    "gunicorn_group": "gunicorn-api",
}


def problems(**values):
    return instance_problems(dict(BASE, **values))


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"gunicorn_socket_activation": True, "gunicorn_restart_mode": "deferred"},
        {"gunicorn_socket_activation": "no", "gunicorn_restart_mode": "immediate"},
        {"gunicorn_bind": ["localhost:9000", ":8001", "[::1]:8000", "10.1.2.3:80"]},
        {"gunicorn_bind": "app.internal:8000", "gunicorn_socket_activation": False},
    ],
)
def test_accepted(values):
    assert problems(**values) == []


@pytest.mark.parametrize(
    ("values", "named", "fix"),
    [
        ({"gunicorn_socket_activation": "maybe"}, "gunicorn_socket_activation", ""),
        ({"gunicorn_restart_mode": "later"}, "gunicorn_restart_mode", "deferred"),
        ({"gunicorn_restart_mode": "immediate\n"}, "gunicorn_restart_mode", "immediate"),
        ({"gunicorn_bind": "app.internal:8000"}, "gunicorn_bind", "gunicorn_socket_activation: false"),
        ({"gunicorn_bind": ["127.0.0.1:8000", "999.1.1.1:80"]}, "gunicorn_bind", "127.0.0.1:80"),
    ],
)
def test_refused_naming_the_variable_and_the_fix(values, named, fix):
    found = problems(**values)
    assert len(found) == 1, found
    assert found[0].startswith(named)
    assert fix in found[0]
