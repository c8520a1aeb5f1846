"""The controller-side checks of the role's and the rollout's variables (plugins/plugin_utils/gunicorn_checks.py).

Table-driven: every bad value must give exactly the problems that name its variable, and every good value
none. The checks are whole-string: a trailing newline or carriage return is always refused.
"""

import os
import stat

import pytest

from ansible_collections.graceful.gunicorn.plugins.filter.instance_problems import FilterModule as InstanceFilters
from ansible_collections.graceful.gunicorn.plugins.filter.release_name import release_name
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_problems import FilterModule as RolloutFilters
from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import (
    ROLE_VARIABLES,
    instance_problems,
    rollout_problems,
)

BASE = {
    "gunicorn_instance": "api",
    "gunicorn_app": "myapi.main:app",
    "gunicorn_app_packages": ["myapi==1.2.3"],
    "gunicorn_user": "gunicorn-api",
    "gunicorn_group": "gunicorn-api",
}

GOOD = [
    ("gunicorn_artifact_cache_dir", "~/.cache/graceful-gunicorn/artifacts"),
    ("gunicorn_artifact_cache_dir", "/var/cache/deploy artifacts"),
    ("gunicorn_arbiter_wheel", "/c/roles/server/files/graceful_gunicorn_arbiter-0.1.0-py3-none-any.whl"),
    ("gunicorn_arbiter_wheel", "/c/graceful_gunicorn_arbiter-0.2.0.dev1+local-py3-none-any.whl"),
    ("gunicorn_app", "myapi"),
    ("gunicorn_app", "my_api.sub.main:application"),
    ("gunicorn_app", "myapi:create_app()"),
    ("gunicorn_app", "myapi:create_app(2,debug=False,x=None,y=-1)"),
    ("gunicorn_bind", "unix:/run/gunicorn-api/gunicorn.sock"),
    ("gunicorn_bind", ["0.0.0.0:8000", "[::]:8000", "localhost:9000", ":8001"]),
    ("gunicorn_read_write_paths", ["/var/lib/myapi", "/srv/data/uploads"]),
    ("gunicorn_environment", {"LOG_LEVEL": "info", "QUOTED": 'it\'s "$fine" `really`', "N": 3, "B": True}),
    ("gunicorn_secret_environment", {"DATABASE_URL": "postgres://u:p@db/x?sslmode=require"}),
    ("gunicorn_root_base", "/opt/apps"),
    ("gunicorn_config_base", "/etc/gunicorn-apps"),
    (
        "gunicorn_settings",
        {"backlog": 2048, "keepalive": 5, "forwarded_allow_ips": "10.0.0.1", "certfile": "/etc/ssl/a.pem"},
    ),
    ("gunicorn_settings", {"worker_refresh_interval": 0, "secure_scheme_headers": {"X-FORWARDED-PROTO": "https"}}),
    ("gunicorn_workers", "4"),
    ("gunicorn_max_requests_jitter", 100),
    ("gunicorn_url_prefix", "/api/v1"),
    ("gunicorn_health_path", "/health?full=1"),
    ("gunicorn_health_status", [200, "204"]),
    ("gunicorn_unit_extra", ["LimitNOFILE=65536", "MemoryMax=2G", 'Environment="A=b c"']),
    ("gunicorn_config_extra", "def post_fork(server, worker):\n    server.log.info('forked %s', worker.pid)\n"),
    ("gunicorn_release", "2.0.0+hotfix.1"),
    ("gunicorn_app_packages", ["/srv/wheels/myapi-1.2.3-py3-none-any.whl"]),
    ("gunicorn_pip_index_url", "https://pypi.internal/simple"),
    ("gunicorn_python", "/usr/bin/python3.11"),
    ("gunicorn_worker_class", "uvicorn_worker.UvicornWorker"),
    ("gunicorn_preload_app", "no"),
]

# (variable, bad value, the variable name the problem must start with, a word the problem must contain)
BAD = [
    ("gunicorn_instance", "api\n", "gunicorn_instance", "not an instance name"),
    ("gunicorn_instance", "Api", "gunicorn_instance", "not an instance name"),
    ("gunicorn_instance", "", "gunicorn_instance", "not set"),
    ("gunicorn_app", "myapi:app\rUser=root", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "myapi:app\n", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "myapi:app --reload", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "myapi:%n", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "myapi:$HOME", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "myapi:create_app('x')", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "myapi:a.b", "gunicorn_app", "module:callable"),
    ("gunicorn_app", "", "gunicorn_app", "not set"),
    ("gunicorn_app", ["myapi:app"], "gunicorn_app", "must be a string"),
    ("gunicorn_app_packages", '["httpbin==0.10.2"]', "gunicorn_app_packages", "must be a list, got a string"),
    ("gunicorn_app_packages", [], "gunicorn_app_packages", "is empty"),
    ("gunicorn_app_packages", ["-r/etc/shadow"], "gunicorn_app_packages[0]", "not a pip requirement"),
    ("gunicorn_app_packages", ["myapi==1\n"], "gunicorn_app_packages[0]", "not a pip requirement"),
    ("gunicorn_app_packages", ["myapi"], "gunicorn_release", "pins no version"),
    ("gunicorn_app_packages", ["myapi==../../etc"], "gunicorn_app_packages[0]", "not a usable directory name"),
    ("gunicorn_release", "1.0\n", "gunicorn_release", "not a usable directory name"),
    ("gunicorn_release", ["1.0"], "gunicorn_release", "must be a string"),
    ("gunicorn_user", "root\n", "gunicorn_user", "not a valid user"),
    ("gunicorn_user", "root", "gunicorn_user", "system account"),
    ("gunicorn_group", "sudo", "gunicorn_group", "system account"),
    ("gunicorn_socket_group", "root", "gunicorn_socket_group", "system group"),
    ("gunicorn_socket_group", "wheel", "gunicorn_socket_group", "system group"),
    ("gunicorn_socket_group", "shadow", "gunicorn_socket_group", "system group"),
    ("gunicorn_socket_group", "www-data\n", "gunicorn_socket_group", "not a valid group"),
    ("gunicorn_read_write_paths", ["/"], "gunicorn_read_write_paths[0]", "root directory"),
    ("gunicorn_read_write_paths", ["/etc/ssh"], "gunicorn_read_write_paths[0]", "system tree"),
    ("gunicorn_read_write_paths", ["/var"], "gunicorn_read_write_paths[0]", "top-level"),
    ("gunicorn_read_write_paths", ["/var/lib/../../etc"], "gunicorn_read_write_paths[0]", "normalised"),
    ("gunicorn_read_write_paths", ["/var/lib/x\n"], "gunicorn_read_write_paths[0]", "control character"),
    ("gunicorn_read_write_paths", ["/var/lib/a b"], "gunicorn_read_write_paths[0]", "spaces"),
    ("gunicorn_read_write_paths", ["/var/lib/50%"], "gunicorn_read_write_paths[0]", "spaces, %"),
    ("gunicorn_read_write_paths", ["var/lib/x"], "gunicorn_read_write_paths[0]", "absolute"),
    ("gunicorn_read_write_paths", ["/etc/gunicorn/api"], "gunicorn_read_write_paths[0]", "system tree"),
    ("gunicorn_read_write_paths", ["/srv/gunicorn/api/releases"], "gunicorn_read_write_paths[0]", "overlaps"),
    ("gunicorn_read_write_paths", "/var/lib/x", "gunicorn_read_write_paths", "must be a list, got a string"),
    ("gunicorn_bind", "unix:/tmp/x.sock", "gunicorn_bind", "unix socket must be in /run/gunicorn-api"),
    ("gunicorn_bind", "unix:/run/gunicorn-api/a b.sock", "gunicorn_bind", "socket path"),
    ("gunicorn_bind", "unix:/run/gunicorn-api/../x.sock", "gunicorn_bind", "normalised"),
    ("gunicorn_bind", "unix:/run/gunicorn-api/" + "s" * 100, "gunicorn_bind", "longer than 107"),
    ("gunicorn_bind", "127.0.0.1:8000\n", "gunicorn_bind", "not understood"),
    ("gunicorn_bind", "127.0.0.1:0", "gunicorn_bind", "port 0"),
    ("gunicorn_bind", ["127.0.0.1:8000", "127.0.0.1:99999"], "gunicorn_bind[1]", "port 99999"),
    ("gunicorn_bind", [], "gunicorn_bind", "is empty"),
    ("gunicorn_environment", {"A\n": "x"}, "gunicorn_environment", "not an environment variable name"),
    ("gunicorn_environment", {"1A": "x"}, "gunicorn_environment", "not an environment variable name"),
    ("gunicorn_environment", {"A": "x\ny"}, "gunicorn_environment.A", "newline"),
    ("gunicorn_environment", {"A": "x\rUser=root"}, "gunicorn_environment.A", "carriage return"),
    ("gunicorn_environment", {"A": ["x"]}, "gunicorn_environment.A", "a list"),
    ("gunicorn_environment", '{"A": "x"}', "gunicorn_environment", "must be a mapping, got a string"),
    ("gunicorn_environment", {"LISTEN_FDS": "3"}, "gunicorn_environment.LISTEN_FDS", "set by systemd or the arbiter"),
    ("gunicorn_secret_environment", {"PWD": "/tmp"}, "gunicorn_secret_environment.PWD", "set by systemd"),
    (
        "gunicorn_environment",
        {"GRACEFUL_GUNICORN_ENV_KEYS": "A"},
        "gunicorn_environment.GRACEFUL_GUNICORN_ENV_KEYS",
        "choose another name",
    ),
    ("gunicorn_secret_environment", {"K": "s3cr3t\n"}, "gunicorn_secret_environment.K", "newline"),
    ("gunicorn_root_base", "", "gunicorn_root_base", "is empty"),
    ("gunicorn_root_base", "/", "gunicorn_root_base", "root directory"),
    ("gunicorn_root_base", "/srv", "gunicorn_root_base", "single component"),
    ("gunicorn_root_base", "/usr/lib", "gunicorn_root_base", "system directory"),
    ("gunicorn_root_base", "/tmp/apps", "gunicorn_root_base", "system directory"),
    ("gunicorn_root_base", "/srv/gunicorn/", "gunicorn_root_base", "normalised"),
    ("gunicorn_root_base", "/srv/gunicorn\n", "gunicorn_root_base", "control character"),
    ("gunicorn_config_base", "/etc/systemd/system", "gunicorn_config_base", "system directory"),
    ("gunicorn_config_base", "/etc", "gunicorn_config_base", "single component"),
    ("gunicorn_config_base", "/srv/gunicorn", "gunicorn_root_base", "same directory"),
    ("gunicorn_settings", {"backlog": 10**4000}, "gunicorn_settings.backlog", "out of range"),
    (
        "gunicorn_settings",
        {"raw_paste_global_conf": [2**64]},
        "gunicorn_settings.raw_paste_global_conf[0]",
        "out of range",
    ),
    ("gunicorn_settings", {"worker": 2}, "gunicorn_settings.worker", "did you mean 'workers'"),
    ("gunicorn_settings", {"bind": "0.0.0.0:80"}, "gunicorn_settings.bind", "use gunicorn_bind"),
    ("gunicorn_settings", {"reuse_port": True}, "gunicorn_settings.reuse_port", "breaks SIGUSR2"),
    ("gunicorn_settings", {"proc_name": "a\0b"}, "gunicorn_settings.proc_name", "NUL"),
    ("gunicorn_settings", {"keepalive": float("nan")}, "gunicorn_settings.keepalive", "no Python literal"),
    ("gunicorn_settings", "{}", "gunicorn_settings", "must be a mapping, got a string"),
    ("gunicorn_workers", "9" * 5000, "gunicorn_workers", "whole number"),
    ("gunicorn_workers", 10**4000, "gunicorn_workers", "out of range"),
    ("gunicorn_workers", 0, "gunicorn_workers", "out of range"),
    ("gunicorn_workers", "4\n", "gunicorn_workers", "whole number"),
    ("gunicorn_workers", True, "gunicorn_workers", "a boolean"),
    ("gunicorn_timeout", "x", "gunicorn_timeout", "whole number"),
    ("gunicorn_graceful_timeout", 86401, "gunicorn_graceful_timeout", "out of range"),
    ("gunicorn_max_requests", 1000, "gunicorn_max_requests_jitter", "without jitter"),
    ("gunicorn_health_timeout", 0, "gunicorn_health_timeout", "out of range"),
    ("gunicorn_keep_releases", 0, "gunicorn_keep_releases", "out of range"),
    ("gunicorn_bake_seconds", "ten", "gunicorn_bake_seconds", "a number"),
    ("gunicorn_url_prefix", "/api/", "gunicorn_url_prefix", "not a URL prefix"),
    ("gunicorn_url_prefix", "api", "gunicorn_url_prefix", "not a URL prefix"),
    ("gunicorn_url_prefix", "/api\n", "gunicorn_url_prefix", "not a URL prefix"),
    ("gunicorn_url_prefix_env", "SCRIPT NAME", "gunicorn_url_prefix_env", "not an environment variable name"),
    ("gunicorn_health_path", "health", "gunicorn_health_path", "not a URL path"),
    ("gunicorn_health_path", "/health\r\n", "gunicorn_health_path", "not a URL path"),
    ("gunicorn_health_status", [200, 700], "gunicorn_health_status[1]", "out of range"),
    ("gunicorn_health_status", "[200]", "gunicorn_health_status", "must be a list, got a string"),
    ("gunicorn_worker_class", "uvicorn.workers.UvicornWorker", "gunicorn_worker_class", "deprecated"),
    ("gunicorn_worker_class", "gthread\n", "gunicorn_worker_class", "not a worker class"),
    ("gunicorn_unit_extra", ["User=root"], "gunicorn_unit_extra[0]", "sets User"),
    ("gunicorn_unit_extra", ["ExecStartPre=+/bin/sh -c id"], "gunicorn_unit_extra[0]", "sets ExecStartPre"),
    ("gunicorn_unit_extra", ["LimitNOFILE=1\rUser=root"], "gunicorn_unit_extra[0]", "not one Key=value line"),
    ("gunicorn_unit_extra", ["LimitNOFILE=1\\"], "gunicorn_unit_extra[0]", "not one Key=value line"),
    ("gunicorn_unit_extra", "LimitNOFILE=1", "gunicorn_unit_extra", "must be a list, got a string"),
    ("gunicorn_config_extra", "def broken(:\n", "gunicorn_config_extra", "not valid Python"),
    ("gunicorn_python", "/tmp/python3", "gunicorn_python", "not a Python interpreter"),
    ("gunicorn_python", "/usr/bin/python3\n", "gunicorn_python", "not a Python interpreter"),
    ("gunicorn_pip_index_url", "ftp://x", "gunicorn_pip_index_url", "not an http(s) URL"),
    ("gunicorn_pip_extra_args", "--pre\n--index-url x", "gunicorn_pip_extra_args", "control character"),
    ("gunicorn_version", "27.0.1\n", "gunicorn_version", "not a version"),
    ("gunicorn_state", "gone", "gunicorn_state", "present or absent"),
    ("gunicorn_preload_app", "maybe", "gunicorn_preload_app", "true or false"),
    ("gunicorn_wheelhouse", "/srv/wheels\n", "gunicorn_wheelhouse", "control character"),
    ("gunicorn_arbiter_wheel", "/c/arbiter", "gunicorn_arbiter_wheel", "not a wheel of the arbiter"),
    ("gunicorn_arbiter_wheel", "/c/other-1.0-py3-none-any.whl", "gunicorn_arbiter_wheel", "not a wheel of the arbiter"),
    (
        "gunicorn_arbiter_wheel",
        "/c/graceful_gunicorn_arbiter-0.1.0-py3-none-any.whl\n",
        "gunicorn_arbiter_wheel",
        "control character",
    ),
    ("gunicorn_arbiter_src", "/c/arbiter", "gunicorn_arbiter_src", "no longer read"),
    ("gunicorn_artifact_cache_dir", "", "gunicorn_artifact_cache_dir", "empty"),
    ("gunicorn_artifact_cache_dir", "/var/cache/a\n", "gunicorn_artifact_cache_dir", "control character"),
    ("gunicorn_artifact_cache_dir", ["/a"], "gunicorn_artifact_cache_dir", "must be a string"),
]


def problems_for(name, value):
    return instance_problems(dict(BASE, **{name: value}))


def test_the_base_is_valid():
    assert instance_problems(BASE) == []


@pytest.mark.parametrize("name,value", GOOD, ids=[f"{n}={v!r}"[:60] for n, v in GOOD])
def test_good_values_pass(name, value):
    values = dict(BASE, **{name: value})
    if name == "gunicorn_bind" and "unix:" in str(value):
        values["gunicorn_socket_group"] = "www-data"
    assert instance_problems(values) == []


@pytest.mark.parametrize("name,value,label,word", BAD, ids=[f"{n}={v!r}"[:60] for n, v, _l, _w in BAD])
def test_bad_values_are_refused_naming_the_variable(name, value, label, word):
    problems = problems_for(name, value)
    named = [p for p in problems if p.startswith(label + " ")]
    assert named, problems
    assert any(word in p for p in named), named
    # every problem names some variable first
    assert all(p.startswith("gunicorn_") for p in problems), problems


def test_every_problem_is_one_line_without_the_raw_control_characters():
    problems = problems_for("gunicorn_app", "a\rUser=root\n")
    assert problems and all("\r" not in p and "\n" not in p for p in problems)


def test_secret_values_are_not_shown():
    problems = problems_for("gunicorn_secret_environment", {"TOKEN": "hunter2\n"})
    assert problems and not any("hunter2" in p for p in problems)


def test_a_socket_group_needs_a_unix_socket():
    problems = problems_for("gunicorn_socket_group", "www-data")
    assert any(p.startswith("gunicorn_socket_group is set but") for p in problems)


def test_a_unix_socket_in_a_read_write_path_passes():
    values = dict(BASE, gunicorn_bind="unix:/var/lib/myapi/s.sock", gunicorn_read_write_paths=["/var/lib/myapi"])
    assert instance_problems(values) == []


def test_absent_needs_neither_app_nor_packages():
    values = {
        "gunicorn_instance": "api",
        "gunicorn_state": "absent",
        "gunicorn_user": "gunicorn-api",
        "gunicorn_group": "x",
    }
    assert instance_problems(values) == []
    assert any(p.startswith("gunicorn_root_base") for p in instance_problems(dict(values, gunicorn_root_base="")))


def test_instance_scope_checks_only_what_rollback_reload_and_refresh_read():
    values = {"gunicorn_instance": "api", "gunicorn_app": "bad app", "gunicorn_keep_releases": 3}
    assert instance_problems(values, scope="instance") == []
    assert instance_problems(dict(values, gunicorn_config_base="/"), scope="instance")
    assert instance_problems(dict(values, gunicorn_instance="a\n"), scope="instance")


def test_nulls_count_as_unset_and_defaults_apply():
    values = dict(BASE, **{name: None for name in ROLE_VARIABLES if name not in BASE})
    assert instance_problems(values) == []


def test_the_filters_are_exported():
    assert InstanceFilters().filters()["instance_problems"] is instance_problems
    assert RolloutFilters().filters()["rollout_problems"] is rollout_problems


@pytest.mark.parametrize(
    "release,packages,expected",
    [
        ("", ["myapi==1.2.3"], "1.2.3"),
        ("", ["myapi==1.2.3; python_version>'3'"], "1.2.3"),
        ("", ["myapi[extra]==2.0,<3"], "2.0"),
        ("", ["/srv/wheels/myapi-1.2.3-py3-none-any.whl"], "1.2.3"),
        ("", ["myapi"], ""),
        ("hotfix", ["myapi==1.2.3"], "hotfix"),
        (None, [], ""),
        (2.5, [], "2.5"),
    ],
)
def test_release_name(release, packages, expected):
    assert release_name(release, packages) == expected


# --- the rollout's own variables

ROLLOUT_BAD = [
    ("upgrade", {"gunicorn_serial": "0"}, "gunicorn_serial"),
    ("upgrade", {"gunicorn_serial": "1\n"}, "gunicorn_serial"),
    ("upgrade", {"gunicorn_serial": []}, "gunicorn_serial"),
    ("upgrade", {"gunicorn_serial": [1, "101%"]}, "gunicorn_serial"),
    ("upgrade", {"gunicorn_max_fail_percentage": 101}, "gunicorn_max_fail_percentage"),
    ("upgrade", {"gunicorn_max_fail_percentage": "5\n"}, "gunicorn_max_fail_percentage"),
    ("upgrade", {"gunicorn_bake_seconds": -1}, "gunicorn_bake_seconds"),
    ("upgrade", {"gunicorn_keep_releases": "9" * 5000}, "gunicorn_keep_releases"),
    ("upgrade", {"gunicorn_release": None}, "gunicorn_release"),
    ("upgrade", {"gunicorn_release": "2.0\n"}, "gunicorn_release"),
    ("deploy", {"gunicorn_release": "{{ lookup('pipe', 'id') }}"}, "gunicorn_release"),
    ("rollback", {"gunicorn_rollback_release": "../1.0"}, "gunicorn_rollback_release"),
    ("upgrade", {"gunicorn_app_package": "myapi --index-url x"}, "gunicorn_app_package"),
    ("upgrade", {"gunicorn_app_package": None, "gunicorn_app_packages": []}, "gunicorn_app_package"),
    ("upgrade", {"gunicorn_app_packages": ["myapi==1.9"], "gunicorn_app_package": None}, "gunicorn_app_packages"),
    ("upgrade", {"gunicorn_app_packages": ["other==2.0"]}, "gunicorn_app_packages"),
    ("reload", {"gunicorn_target": "web\n"}, "gunicorn_target"),
    ("reload", {"gunicorn_become": "sometimes"}, "gunicorn_become"),
    ("reload", {"gunicorn_drain_tasks": "/etc/passwd"}, "gunicorn_drain_tasks"),
    ("reload", {"gunicorn_drain_tasks": "{{ x }}.yml"}, "gunicorn_drain_tasks"),
    ("reload", {"gunicorn_summary_file": "/nonexistent-dir/summary.json"}, "gunicorn_summary_file"),
]
ROLLOUT_BASE = {"gunicorn_release": "2.0", "gunicorn_app_package": "myapi", "gunicorn_app_packages": ["myapi==2.0"]}


@pytest.mark.parametrize("action,values,label", ROLLOUT_BAD, ids=[f"{a}:{v!r}"[:60] for a, v, _l in ROLLOUT_BAD])
def test_bad_rollout_values_are_refused(action, values, label):
    problems = rollout_problems(dict(ROLLOUT_BASE, **values), action)
    assert any(p.startswith(label + " ") for p in problems), problems


@pytest.mark.parametrize("action", ["deploy", "upgrade", "rollback", "reload", "refresh"])
def test_good_rollout_values_pass(action, tmp_path):
    values = dict(
        ROLLOUT_BASE,
        gunicorn_serial=[1, "50%"],
        gunicorn_max_fail_percentage="10",
        gunicorn_bake_seconds=2.5,
        gunicorn_keep_releases="3",
        gunicorn_summary_file=str(tmp_path / "summary.json"),
        gunicorn_rollback_release="1.0.0",
    )
    assert rollout_problems(values, action) == []


def test_an_unknown_action_is_refused():
    assert rollout_problems({}, "destroy")


# --- drain and undrain task files: they run as root on every host


@pytest.fixture
def hook_dir(tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "drain.yml").write_text("- ansible.builtin.debug: {msg: drain}\n")
    return hooks


def hook_problems(path, dirs, overridden=False):
    values = {"gunicorn_drain_tasks": str(path), "gunicorn_hook_dirs": dirs}
    return rollout_problems(values, "reload", hook_dirs_overridden=overridden)


def test_a_hook_in_a_hook_dir_passes(hook_dir):
    assert hook_problems(hook_dir / "drain.yml", [str(hook_dir)]) == []


def test_the_collection_examples_are_allowed_by_default():
    assert rollout_problems(
        {"gunicorn_drain_tasks": "examples/haproxy/drain.yml"}, "reload"
    ) == [] or not os.path.exists("examples/haproxy/drain.yml")


def test_a_hook_outside_the_hook_dirs_is_refused(hook_dir, tmp_path):
    other = tmp_path / "other.yml"
    other.write_text("[]\n")
    problems = hook_problems(other, [str(hook_dir)])
    assert problems and problems[0].startswith("gunicorn_drain_tasks") and "not inside" in problems[0]


def test_a_symlink_out_of_the_hook_dir_is_refused(hook_dir, tmp_path):
    outside = tmp_path / "outside.yml"
    outside.write_text("[]\n")
    (hook_dir / "link.yml").symlink_to(outside)
    problems = hook_problems(hook_dir / "link.yml", [str(hook_dir)])
    assert problems and "not inside" in problems[0]


def test_a_world_writable_hook_is_refused(hook_dir):
    hook = hook_dir / "drain.yml"
    hook.chmod(hook.stat().st_mode | stat.S_IWOTH)
    problems = hook_problems(hook, [str(hook_dir)])
    assert problems and "writable by every user" in problems[0]


def test_a_world_writable_directory_on_the_way_is_refused(hook_dir):
    sub = hook_dir / "team"
    sub.mkdir()
    (sub / "drain.yml").write_text("[]\n")
    sub.chmod(0o777)
    problems = hook_problems(sub / "drain.yml", [str(hook_dir)])
    assert problems and "writable by every user" in problems[0]


def test_hook_dirs_from_extra_vars_are_refused(hook_dir):
    problems = hook_problems(hook_dir / "drain.yml", [str(hook_dir)], overridden=True)
    assert problems and problems[0].startswith("gunicorn_hook_dirs is given as an extra variable")
