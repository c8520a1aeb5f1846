"""Constants of the AWX job tests and the survey's answers as AWX passes them (shared by conftest and tests)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB_PY = REPO / "tests" / "lab" / "lab.py"
COLLECTIONS = REPO / "build" / "collections"
COLLECTION_LINK = COLLECTIONS / "ansible_collections" / "graceful" / "gunicorn"
WHEELHOUSE = Path(os.environ.get("AWX_TEST_WHEELHOUSE", REPO / "build" / "wheelhouse"))
# What the jobs install from the wheelhouse: the role copies the whole directory to every host on every run,
# file by file, so the session copies only these into its own (which also keeps it from a concurrent rebuild).
WHEELHOUSE_NEEDS = (
    "graceful_demo_asgi-[0-9].[0-9].[0-9]-py3-none-any.whl",
    "graceful_gunicorn_arbiter-*.whl",
    "gunicorn-*.whl",
    "uvicorn-*.whl",
    "uvicorn_worker-*.whl",
    "h11-*.whl",
    "click-*.whl",
)
AWX_PROJECT = REPO / "examples" / "awx"
SURVEY = AWX_PROJECT / "survey-upgrade.json"
DEMO_VARS = REPO / "tests" / "demo" / "vars.yml"
OUT = REPO / "build" / "awx-jobs"
LAB_NAME = "awx"
INSTANCE = "demo"
PORT = 8000
APP_PACKAGE = "graceful-demo-asgi"
# The release that fails to import on the second host only (its environment names it, see the fixture).
BROKEN_RELEASE = "3.0.0"
# A guard against a hung job, not a speed target: a three-host serial upgrade takes a few minutes, longer while
# make test runs the molecule scenarios beside these jobs on the same cores.
JOB_TIMEOUT = 900


# ---------------------------------------------------------------- the survey


def survey_answers(**answers) -> dict:
    """The extra variables AWX builds from survey-upgrade.json: defaults, overridden by the answers.

    Each answer is checked against its question the way AWX checks it at launch (type, choices, the
    min/max length of text, the min/max of integers), so a test cannot launch what AWX would refuse.
    Optional questions left blank are not passed, as AWX leaves them out.
    """
    spec = json.loads(SURVEY.read_text())["spec"]
    by_var = {q["variable"]: q for q in spec}
    unknown = set(answers) - set(by_var)
    assert not unknown, f"not survey questions: {sorted(unknown)}"
    extravars = {}
    for var, question in by_var.items():
        value = answers.get(var, question.get("default"))
        if value in ("", None) and not question["required"]:
            continue
        kind = question["type"]
        if kind == "integer":
            assert isinstance(value, int) and question["min"] <= value <= question["max"], f"{var}={value!r}"
        elif kind == "multiplechoice":
            choices = question["choices"]
            choices = choices.split("\n") if isinstance(choices, str) else choices
            assert value in choices, f"{var}={value!r} is not one of {choices}"
        else:
            assert isinstance(value, str) and question["min"] <= len(value) <= question["max"], f"{var}={value!r}"
        extravars[var] = value
    return extravars
