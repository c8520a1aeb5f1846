"""The AWX and CI examples stay in step with the collection's playbooks."""

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
AWX = REPO / "examples" / "awx"
CI = REPO / "examples" / "ci"

# AWX's own detection (awx/main/utils/ansible.py, valid_playbook_re), applied line by line with re.match:
# a YAML file it does not match is not offered as a job template playbook.
AWX_PLAYBOOK_RE = re.compile(r"^\s*-?\s*(hosts|include|import_playbook):")

WRAPPERS = ["upgrade", "rollback", "status", "deploy", "reload", "refresh"]
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


def load_yaml(path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_survey():
    with (AWX / "survey-upgrade.json").open(encoding="utf-8") as f:
        return json.load(f)


def playbook_text(name):
    """The playbook's text plus that of the files under playbooks/ it names, and those they name, and so on."""
    path = PLAYBOOKS / f"{name}.yml"
    if not path.is_file():
        pytest.fail(f"playbooks/{name}.yml does not exist: examples/awx/{name}.yml imports it")
    seen = {path: path.read_text(encoding="utf-8")}
    grown = True
    while grown:
        grown = False
        text = "\n".join(seen.values())
        for other in sorted(PLAYBOOKS.rglob("*.y*ml")):
            if other not in seen and other.stem not in WRAPPERS and other.name in text:
                seen[other] = other.read_text(encoding="utf-8")
                grown = True
    return "\n".join(seen.values())


def test_every_wrapper_is_there():
    assert sorted(p.stem for p in AWX.glob("*.yml") if p.stem != "execution-environment") == sorted(WRAPPERS)


@pytest.mark.parametrize("name", WRAPPERS)
def test_wrapper_imports_the_collection_playbook(name):
    plays = load_yaml(AWX / f"{name}.yml")
    assert isinstance(plays, list)
    assert len(plays) == 1
    (play,) = plays
    assert play["import_playbook"] == f"graceful.gunicorn.{name}"
    assert set(play) <= {"name", "import_playbook"}
    assert (PLAYBOOKS / f"{name}.yml").is_file(), f"graceful.gunicorn.{name} has no playbooks/{name}.yml"


@pytest.mark.parametrize("name", WRAPPERS)
def test_awx_lists_the_wrapper(name):
    lines = (AWX / f"{name}.yml").read_text(encoding="utf-8").splitlines()
    assert any(AWX_PLAYBOOK_RE.match(line) for line in lines)


def test_awx_would_not_list_an_fqcn_only_wrapper():
    # why the wrappers use the short keyword: AWX's regex has no room for a collection prefix
    assert not AWX_PLAYBOOK_RE.match("- ansible.builtin.import_playbook: graceful.gunicorn.upgrade")
    assert AWX_PLAYBOOK_RE.match("  import_playbook: graceful.gunicorn.upgrade")


def test_survey_is_a_valid_awx_survey_spec():
    survey = load_survey()
    assert isinstance(survey["name"], str) and survey["name"]
    assert isinstance(survey["description"], str)
    assert isinstance(survey["spec"], list) and survey["spec"]
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables)), "a variable is asked twice"
    for q in survey["spec"]:
        for field in ("question_name", "variable", "type"):
            assert isinstance(q[field], str) and q[field], (q, field)
        assert isinstance(q["required"], bool)
        assert q["type"] in SURVEY_TYPES
        # AWX rejects a default of the wrong type, and min/max that are not integers
        if "default" in q:
            expected = {"integer": int, "float": (int, float)}.get(q["type"], str)
            assert isinstance(q["default"], expected) and not isinstance(q["default"], bool), q
        for key in ("min", "max"):
            assert q.get(key) is None or isinstance(q[key], int), q
        if q["type"] == "integer" and "default" in q:
            assert q.get("min", q["default"]) <= q["default"] <= q.get("max", q["default"]), q
        if q["type"] in ("multiplechoice", "multiselect"):
            choices = q["choices"].split("\n") if isinstance(q["choices"], str) else q["choices"]
            assert q.get("default", choices[0]) in choices, q


def test_survey_asks_for_what_the_upgrade_needs():
    variables = {q["variable"]: q for q in load_survey()["spec"]}
    for required in ("gunicorn_instance", "gunicorn_release", "gunicorn_app_package"):
        assert variables[required]["required"], required
    assert variables["gunicorn_target"]["default"] == "gunicorn_hosts"


@pytest.mark.parametrize("question", load_survey()["spec"], ids=lambda q: q["variable"])
def test_survey_variable_is_used_by_the_upgrade_playbook(question):
    variable = question["variable"]
    assert variable.startswith("gunicorn_")
    assert re.search(rf"\b{re.escape(variable)}\b", playbook_text("upgrade")), (
        f"{variable} is asked by the survey but playbooks/upgrade.yml never reads it"
    )


def test_requirements_and_execution_environment_name_the_collection():
    requirements = load_yaml(AWX / "collections" / "requirements.yml")
    assert [c["name"] for c in requirements["collections"]] == ["graceful.gunicorn"]
    ee = load_yaml(AWX / "execution-environment.yml")
    assert ee["version"] == 3
    assert [c["name"] for c in ee["dependencies"]["galaxy"]["collections"]] == ["graceful.gunicorn"]
    # the collection's controller side is stdlib only: nothing to pip install besides ansible itself
    assert "python" not in ee["dependencies"]


def test_ci_script_runs_the_upgrade_and_propagates_its_status():
    script = (CI / "deploy.sh").read_text(encoding="utf-8")
    assert script.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in script
    assert "ansible-playbook graceful.gunicorn.upgrade" in script
    assert "gunicorn_summary_file=" in script
    assert re.search(r'^exit "\$rc"$', script, re.M)
    for pipeline in ("gitlab-ci.yml", "github-actions.yml"):
        text = (CI / pipeline).read_text(encoding="utf-8")
        assert "deploy.sh" in text
        assert "gunicorn-summary.json" in text
