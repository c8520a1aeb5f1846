"""The AWX and CI examples stay in step with the collection's playbooks."""

import json
import os
import re
import stat
import subprocess
import sys
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
    # community.general only for the haproxy drain/undrain examples
    ee_collections = [c["name"] for c in ee["dependencies"]["galaxy"]["collections"]]
    assert ee_collections[0] == "graceful.gunicorn"
    assert set(ee_collections[1:]) <= {"community.general"}
    # the collection's controller side is stdlib only: nothing to pip install besides ansible itself
    assert "python" not in ee["dependencies"]


def test_ci_script_runs_the_upgrade_and_propagates_its_status():
    script = (CI / "deploy.sh").read_text(encoding="utf-8")
    assert script.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in script
    assert "ansible-playbook graceful.gunicorn.upgrade" in script
    assert '"gunicorn_summary_file"' in script
    assert re.search(r'^exit "\$rc"$', script, re.M)
    for pipeline in ("gitlab-ci.yml", "github-actions.yml"):
        text = (CI / pipeline).read_text(encoding="utf-8")
        assert "deploy.sh" in text
        assert "gunicorn-summary.json" in text


# deploy.sh with stand-ins for ansible-galaxy and ansible-playbook (the script's own logic is what is tested
# here; the playbooks' refusals are tested with the real ansible-playbook in test_rollout_validation.py).
# The stand-in ansible-playbook records its arguments and the vars file it was given.
STUB_PLAYBOOK = """#!/bin/sh
printf '%s\\n' "$@" > "$STUB_OUT/args"
for arg in "$@"; do case $arg in @*) cp "${arg#@}" "$STUB_OUT/vars.yml" ;; esac; done
exit "${STUB_RC:-0}"
"""


def run_deploy(tmp_path, **env):
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name, text in (("ansible-playbook", STUB_PLAYBOOK), ("ansible-galaxy", "#!/bin/sh\nexit 0\n")):
        (stubs / name).write_text(text)
        (stubs / name).chmod(stat.S_IRWXU)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    full_env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "STUB_OUT": str(out),
        "GUNICORN_INVENTORY": "inventory.yml",
        "GUNICORN_INSTANCE": "api",
        "GUNICORN_COLLECTIONS_DIR": str(tmp_path / "collections"),
        "GUNICORN_SUMMARY_FILE": str(tmp_path / "summary.json"),
        "TMPDIR": str(tmp_path),
    }
    full_env.update(env)
    result = subprocess.run(
        ["sh", str(CI / "deploy.sh"), "--limit", "web1"],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    return result, out


class UnsafeTagLoader(yaml.SafeLoader):
    """YAML as Ansible reads it, noting which values carry the !unsafe tag."""


def load_vars_file(path):
    tagged = []

    def unsafe(loader, node):
        value = loader.construct_scalar(node)
        tagged.append(value)
        return value

    UnsafeTagLoader.add_constructor("!unsafe", unsafe)
    values = yaml.load(path.read_text(encoding="utf-8"), Loader=UnsafeTagLoader)
    return values, {name for name, value in values.items() if any(value is t for t in tagged)}


def test_ci_script_passes_the_values_as_json(tmp_path):
    result, out = run_deploy(
        tmp_path,
        GUNICORN_RELEASE="2.4.1+build.7",
        GUNICORN_SERIAL="25%",
        GUNICORN_BAKE_SECONDS="3",
        GUNICORN_TARGET="web:&eu",
    )
    assert result.returncode == 0, result.stderr
    args = (out / "args").read_text().splitlines()
    assert args[:3] == ["graceful.gunicorn.upgrade", "-i", "inventory.yml"]
    assert args[-2:] == ["--limit", "web1"]
    assert not any("=" in arg for arg in args), args  # no key=value text reaches Ansible
    values, unsafe = load_vars_file(out / "vars.yml")
    assert unsafe == {name for name, value in values.items() if isinstance(value, str)}, "every string is !unsafe"
    assert values == {
        "gunicorn_release": "2.4.1+build.7",
        "gunicorn_instance": "api",
        "gunicorn_target": "web:&eu",
        "gunicorn_serial": "25%",
        "gunicorn_bake_seconds": 3.0,
        "gunicorn_summary_file": str(tmp_path / "summary.json"),
    }
    assert not list(tmp_path.glob("gunicorn-deploy-vars.*")), "the vars file is removed afterwards"


@pytest.mark.parametrize(
    "env",
    [
        {"GUNICORN_RELEASE": "1.0{{ lookup('pipe', 'id') }}"},
        {"GUNICORN_RELEASE": "1.0\n"},
        {"GUNICORN_RELEASE": "1.0 gunicorn_become=false"},
        {"GUNICORN_RELEASE": "../1.0"},
        {"GUNICORN_RELEASE": "1.0", "GUNICORN_INSTANCE": "api\n"},
        {"GUNICORN_RELEASE": "1.0", "GUNICORN_TARGET": "{{ 7 * 7 }}"},
        {"GUNICORN_RELEASE": "1.0", "GUNICORN_APP_PACKAGE": "myapi --index-url http://x"},
        {"GUNICORN_RELEASE": "1.0", "GUNICORN_SERIAL": "0"},
        {"GUNICORN_RELEASE": "v2.0 {{ 7 * 7 }}"},
        {"GUNICORN_RELEASE": "{{7*7}}"},
        {"GUNICORN_RELEASE": "2.0", "GUNICORN_APP_PACKAGE": "my{{ 7 * 7 }}api"},
    ],
)
def test_ci_script_refuses_a_bad_value_before_ansible_runs(tmp_path, env):
    result, out = run_deploy(tmp_path, **env)
    assert result.returncode == 64, result.stderr
    assert "refused" in result.stderr
    assert not (out / "args").exists(), "ansible-playbook ran"


def test_ci_script_propagates_the_playbook_status(tmp_path):
    result, _out = run_deploy(tmp_path, GUNICORN_RELEASE="2.0.0", STUB_RC="2")
    assert result.returncode == 2
    assert "failed (ansible-playbook exit status 2)" in result.stderr


# The ansible-playbook of the venv running the tests (the project's, or a tests/matrix cell's).
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs ansible-playbook beside this Python (make venv)")
def test_ci_vars_file_is_taken_literally_by_ansible(tmp_path):
    """The vars file deploy.sh writes, read by the real ansible-playbook: its strings are never templated.

    deploy.sh refuses a ref holding '{{' before writing the file, so a refused value is put into the file
    written for an accepted one, in the same form, to check the second guard on its own.
    """
    result, out = run_deploy(tmp_path, GUNICORN_RELEASE="2.0.0", GUNICORN_TARGET="web")
    assert result.returncode == 0, result.stderr
    written = (out / "vars.yml").read_text(encoding="utf-8")
    hostile = "2.0 {{ 7 * 7 }} {{ lookup('ansible.builtin.env', 'HOME') }}"
    assert '"2.0.0"' in written
    vars_file = tmp_path / "hostile.yml"
    vars_file.write_text(written.replace('"2.0.0"', json.dumps(hostile)), encoding="utf-8")
    playbook = tmp_path / "show.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n        content: '{{ gunicorn_release }}'\n        dest: '{{ out }}'\n"
    )
    shown = tmp_path / "shown.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    run = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"@{vars_file}",
            "-e",
            f"out={shown}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        env={**env, "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert shown.read_text(encoding="utf-8") == hostile


def text_bound(pattern, char):
    """The longest run of char that pattern matches as a whole string (0 when none does)."""
    longest = 0
    for length in range(1, 2049):
        if pattern.fullmatch(char * length):
            longest = length
    return longest


def test_survey_limits_agree_with_the_playbook_checks():
    from ansible_collections.graceful.gunicorn.plugins.plugin_utils import gunicorn_checks as checks

    questions = {q["variable"]: q for q in load_survey()["spec"]}

    def problems(variable, value):
        return [p for p in checks.rollout_problems({variable: value}, "upgrade") if p.startswith(variable)]

    # Text answers: the survey's maximum length is the longest value the checks accept.
    for variable, pattern, char in (
        ("gunicorn_instance", checks.INSTANCE_RE, "a"),
        ("gunicorn_release", checks.RELEASE_RE, "A"),
        ("gunicorn_app_package", checks.PACKAGE_NAME_RE, "a"),
    ):
        question = questions[variable]
        assert question["max"] == text_bound(pattern, char), f"{variable}: survey max {question['max']}"
        assert question["min"] >= 1

    # Integer answers: the survey's range lies within what the rollout's checks accept, and every bound of the
    # survey is accepted; the minimum is the checks' own minimum (a survey cannot offer less than the playbook).
    for variable in ("gunicorn_keep_releases", "gunicorn_max_fail_percentage", "gunicorn_bake_seconds"):
        question = questions[variable]
        low, high = question["min"], question["max"]
        for value in (low, high, question["default"]):
            assert problems(variable, value) == [], f"{variable}={value} refused"
        assert problems(variable, low - 1), f"{variable}: survey min {low} is above the checks'"
    assert questions["gunicorn_keep_releases"]["min"] == checks.INT_BOUNDS["gunicorn_keep_releases"][0]
    assert questions["gunicorn_keep_releases"]["max"] <= checks.INT_BOUNDS["gunicorn_keep_releases"][1]

    # Batch sizes offered are batch sizes the checks accept.
    for choice in questions["gunicorn_serial"]["choices"].split("\n"):
        assert problems("gunicorn_serial", choice) == [], choice


def test_example_ansible_cfg_pipelines_and_keeps_connections(tmp_path):
    """ansible-config reads the example as Ansible would: pipelining on, connections kept, forks for staging."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "examples" / "ansible.cfg"), ANSIBLE_LOCAL_TEMP=str(tmp_path))
    ansible_config = Path(sys.executable).parent / "ansible-config"
    dumped = {}
    for extra in ([], ["-t", "connection"]):
        out = subprocess.run(
            [str(ansible_config), "dump", "--only-changed", "--format", "json", *extra],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        dumped[tuple(extra)] = json.loads(out)
    base = {item["name"]: item["value"] for item in dumped[()] if isinstance(item, dict) and "name" in item}
    assert base["DEFAULT_FORKS"] >= 20
    plugins = {name: items for entry in dumped[("-t", "connection")] for name, items in entry.items()}
    ssh = {item["name"]: item["value"] for item in plugins["ssh"]}
    assert ssh["pipelining"] is True
    assert "ControlPersist=" in ssh["ssh_args"] and "ControlMaster=auto" in ssh["ssh_args"]
