"""The collection's filter plugins."""

import ast
import math
import shlex
import shutil
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.gunicorn.plugins.filter.python_literal import FilterModule as LiteralFilters
from ansible_collections.graceful.gunicorn.plugins.filter.python_literal import python_literal
from ansible_collections.graceful.gunicorn.plugins.filter.systemd_env_quote import systemd_env_quote
from ansible_collections.graceful.gunicorn.plugins.filter.systemd_unit_value import systemd_unit_value
from ansible_collections.graceful.gunicorn.plugins.filter.unknown_settings import unknown_settings


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -3,
        2**70,
        1.5,
        "",
        "plain",
        "it's",
        'say "hi"',
        "back\\slash",
        "line\nbreak\ttab",
        "'''; import os; os.system('x') #",
        '"""\nimport os\n"""',
        "unicode: é ✓",
        [1, "two", None, [True]],
        {"X-FORWARDED-PROTO": "https", "nested": {"a": [1, 2]}},
        {},
        [],
    ],
)
def test_python_literal_round_trips(value):
    text = python_literal(value)
    assert ast.literal_eval(text) == value
    # The literal is a single expression: assigning it cannot run anything else.
    tree = ast.parse("x = " + text)
    assert len(tree.body) == 1


def test_python_literal_keywords():
    assert python_literal(True) == "True"
    assert python_literal(False) == "False"
    assert python_literal(None) == "None"
    assert python_literal("True") == "'True'"


def test_python_literal_tuple_and_set_become_lists():
    assert python_literal((1, 2)) == "[1, 2]"
    assert ast.literal_eval(python_literal({"b", "a"})) == ["a", "b"]


def test_python_literal_str_subclass_renders_plain():
    class Tagged(str):
        def __repr__(self):
            return f"Tagged({str.__repr__(self)})"

    assert python_literal(Tagged("x")) == "'x'"


@pytest.mark.parametrize("value", [math.nan, math.inf, object(), {(1, 2): "tuple key"}])
def test_python_literal_refuses(value):
    with pytest.raises(AnsibleFilterError):
        python_literal(value)


def test_filter_module_exports():
    assert LiteralFilters().filters()["python_literal"] is python_literal


def test_unknown_settings_from_mapping():
    result = unknown_settings({"worker": 2, "timeout": 30, "bind": "x"})
    assert result == [{"name": "worker", "suggestion": "workers"}]


def test_unknown_settings_from_list_and_extra():
    assert unknown_settings(["custom"], extra=["custom"]) == []
    assert unknown_settings(["custom"])[0]["name"] == "custom"


@pytest.mark.parametrize("bad", ["workers", 3, None])
def test_unknown_settings_refuses_non_collections(bad):
    with pytest.raises(AnsibleFilterError):
        unknown_settings(bad)


@pytest.mark.parametrize(
    "value",
    ["plain", "", "with space", 'q"uote', "dollar $HOME ${X}", "back\\slash", "tick `id`", "it's", "a=b#c"],
)
def test_systemd_env_quote_reads_back_in_sh(value):
    quoted = systemd_env_quote(value)
    out = subprocess.run(["sh", "-c", f'V={quoted}; printf %s "$V"'], check=True, capture_output=True, text=True).stdout
    assert out == value, shlex.quote(quoted)


def test_systemd_env_quote_scalars():
    assert systemd_env_quote(True) == '"true"'
    assert systemd_env_quote(None) == '""'
    assert systemd_env_quote(8) == '"8"'
    with pytest.raises(AnsibleFilterError):
        systemd_env_quote("nul\0")


def test_systemd_env_quote_refuses_line_breaks():
    for value in ("a\nb", "a\rUser=root", "\n"):
        with pytest.raises(AnsibleFilterError):
            systemd_env_quote(value)


@pytest.mark.parametrize(
    "value,kind,expected",
    [
        ("gunicorn demo (myapp:app)", "value", "gunicorn demo (myapp:app)"),
        ("50% off", "value", "50%% off"),
        ("/srv/gunicorn/%n", "word", "/srv/gunicorn/%%n"),
        ("myapp:$HOME%i", "exec", "myapp:$$HOME%%i"),
        ("myapp:create_app(workers=2)", "exec", "myapp:create_app(workers=2)"),
        ("LimitNOFILE=%n", "line", "LimitNOFILE=%n"),
        (30, "value", "30"),
    ],
)
def test_systemd_unit_value_escapes(value, kind, expected):
    assert systemd_unit_value(value, kind) == expected


@pytest.mark.parametrize(
    "value,kind",
    [
        ("app\rUser=root", "value"),
        ("app\nUser=root", "value"),
        ("app\x85", "value"),
        ("back\\slash", "value"),
        ("LimitNOFILE=1\\", "line"),
        ("two words", "word"),
        ("'quoted'", "exec"),
        ("", "exec"),
        (";", "exec"),
        (None, "value"),
        (["a"], "value"),
        ("x", "shell"),
    ],
)
def test_systemd_unit_value_refuses(value, kind):
    with pytest.raises(AnsibleFilterError):
        systemd_unit_value(value, kind)


@pytest.mark.parametrize("escape", [True, False])
def test_systemd_accepts_escaped_values_only(tmp_path, escape):
    # '%z' is no systemd specifier: written as is, systemd-analyze verify refuses the unit; escaped, it is text.
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    description, argument = "gunicorn 50%z", "x%z$HOME"
    if escape:
        description, argument = systemd_unit_value(description), systemd_unit_value(argument, "exec")
    unit = tmp_path / "escape-check.service"
    unit.write_text(f"[Unit]\nDescription={description}\n[Service]\nType=oneshot\nExecStart=/bin/true {argument}\n")
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert (result.returncode == 0) == escape, result.stdout + result.stderr
