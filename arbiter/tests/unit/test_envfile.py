"""The environment file parser reads what the role's template writes, and nothing looser."""

import importlib.util
from pathlib import Path

import pytest

from graceful_arbiter import envfile

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("systemd_env_quote", ROOT / "plugins/filter/systemd_env_quote.py")
_filter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_filter)
quote = _filter.systemd_env_quote


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        "two words",
        'pa$$ "word"',
        "back\\slash\\",
        "`cmd` $(x) ${Y}",
        "#not a comment",
        " lead",
        "é ü 漢",
        "=",
    ],
)
def test_what_the_template_writes_reads_back_unchanged(value):
    text = f"#\n# Ansible managed\n#\n# Environment of gunicorn-demo.service\nDEMO_VALUE={quote(value)}\n"
    assert envfile.parse(text) == {"DEMO_VALUE": value}


def test_plain_values_comments_and_blank_lines():
    text = "# comment\n\n   \nA=1\nB=\nC=a/b:c,d@e\n  # indented comment\n"
    assert envfile.parse(text) == {"A": "1", "B": "", "C": "a/b:c,d@e"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('A="ok"\nB="unterminated\n', 2),
        ('A="a"b"\n', 1),
        ('A="\\n"\n', 1),
        ('A="$HOME"\n', 1),
        ("A=two words\n", 1),
        ("A='single'\n", 1),
        ("A=$HOME\n", 1),
        ("\n\nexport A=1\n", 3),
        ("1A=x\n", 1),
        ("A-B=x\n", 1),
        (" A=x\n", 1),
        ("no assignment\n", 1),
        ('A="x"\r\n', 1),
        ('A="x" \n', 1),
        ("GRACEFUL_GUNICORN_ENV_KEYS=A\n", 1),
    ],
)
def test_anything_else_is_refused_by_line_without_the_value(text, line):
    with pytest.raises(envfile.EnvFileError) as raised:
        envfile.parse(text)
    message = str(raised.value)
    assert message.startswith(f"line {line}:")
    for secret in ("unterminated", "two words", "single", "HOME"):
        assert secret not in message


def test_apply_records_names_and_drops_removed_ones():
    environ = {"KEEP": "outside the file", "OLD": "1", envfile.KEYS_ENV: "OLD,SECRET"}
    names, removed = envfile.apply({"SECRET": "new", "NEW": "2"}, environ)
    assert names == ["NEW", "SECRET"] and removed == ["OLD"]
    assert environ == {"KEEP": "outside the file", "SECRET": "new", "NEW": "2", envfile.KEYS_ENV: "NEW,SECRET"}
    # A later read with an empty file removes everything the file set, and only that.
    envfile.apply({}, environ)
    assert environ == {"KEEP": "outside the file", envfile.KEYS_ENV: ""}


def test_without_the_variable_nothing_happens():
    environ = {"A": "1"}
    assert envfile.reload_from_environment(environ) is None
    assert environ == {"A": "1"}


def test_a_bad_file_leaves_the_environment_alone(tmp_path):
    path = tmp_path / "environment"
    path.write_text('A="new"\nB="broken\n')
    environ = {envfile.FILE_ENV: str(path), "A": "old", envfile.KEYS_ENV: "A"}
    before = dict(environ)
    with pytest.raises(envfile.EnvFileError, match="line 2"):
        envfile.reload_from_environment(environ)
    assert environ == before
    path.write_text('A="new"\n')
    assert envfile.reload_from_environment(environ) == (str(path), ["A"], [])
    assert environ["A"] == "new"


def test_unreadable_or_relative_paths_are_errors(tmp_path):
    with pytest.raises(envfile.EnvFileError, match="cannot read"):
        envfile.reload_from_environment({envfile.FILE_ENV: str(tmp_path / "missing")})
    with pytest.raises(envfile.EnvFileError, match="absolute"):
        envfile.reload_from_environment({envfile.FILE_ENV: "relative/environment"})
