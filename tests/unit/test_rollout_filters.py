"""The rollout playbooks' filters: failure budget, failure phase, summary, pip pins, release keep-list."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.gunicorn.plugins.filter.pip_pin import pip_pin
from ansible_collections.graceful.gunicorn.plugins.filter.release_keep_list import release_keep_list
from ansible_collections.graceful.gunicorn.plugins.filter.release_name import FilterModule as ReleaseNameFilters
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_budget import rollout_budget
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_failure import rollout_failure
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_stage import rollout_stage
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_stage_report import rollout_stage_report
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_summary import rollout_summary

REPO = Path(__file__).resolve().parents[2]
FILTERS = [
    "pip_pin",
    "release_keep_list",
    "rollout_budget",
    "rollout_failure",
    "rollout_hook",
    "rollout_plan",
    "rollout_stage",
    "rollout_stage_report",
    "rollout_summary",
]


def turn(status=None, started=True, **result):
    """A host's variables after its turn in a rollout."""
    host = {"__gunicorn_rollout_started": started}
    if status is not None:
        host["gunicorn_rollout_result"] = {"status": status, **result}
    return host


# --- the failure budget ------------------------------------------------------------------------------


def test_budget_counts_failed_rolled_back_and_unreachable_hosts():
    hostvars = {
        "a": turn("upgraded"),
        "b": turn("rolled_back"),
        "c": turn("unreachable"),
        "d": turn("failed"),
        "e": turn("skipped"),
        "f": turn(started=False),
    }
    budget = rollout_budget(hostvars, list(hostvars), 50)
    assert budget == {"failed": ["b", "c", "d"], "exceeded": False}  # 3 of 6 is not more than 50%
    assert rollout_budget(hostvars, list(hostvars), 49.9)["exceeded"] is True


def test_budget_zero_stops_at_the_first_failure_and_counts_a_turn_without_outcome():
    hostvars = {"a": turn("upgraded"), "b": turn(None), "c": turn(started=False)}
    assert rollout_budget(hostvars, ["a", "c"], 0) == {"failed": [], "exceeded": False}
    assert rollout_budget(hostvars, ["a", "b", "c"], 0) == {"failed": ["b"], "exceeded": True}


def test_budget_of_100_never_stops():
    hostvars = {name: turn("failed") for name in "abc"}
    assert rollout_budget(hostvars, list("abc"), 100)["exceeded"] is False


def test_budget_ignores_hosts_it_has_no_variables_for():
    assert rollout_budget({"a": turn("failed")}, ["a", "gone"], 0)["failed"] == ["a"]


@pytest.mark.parametrize("percentage", [-1, 101, "lots", True, None])
def test_budget_refuses_a_bad_percentage(percentage):
    with pytest.raises(AnsibleFilterError, match="max_fail_percentage"):
        rollout_budget({}, [], percentage)


def test_budget_refuses_a_string_of_hosts():
    with pytest.raises(AnsibleFilterError, match="hosts"):
        rollout_budget({}, "a,b", 0)


# --- the failed phase ------------------------------------------------------------------------------


def test_failure_phase_is_the_noted_step_and_the_modules_phase():
    result = {"failed": True, "failed_phase": "health_new", "msg": "the new master answered 500"}
    assert rollout_failure(result, "upgrade", task="Upgrade the running master") == {
        "phase": "upgrade/health_new",
        "message": "Upgrade the running master: the new master answered 500",
    }


@pytest.mark.parametrize(
    "task",
    ["Refuse a configuration gunicorn rejects", "Check health", "Check the configuration", ""],
)
def test_failure_phase_does_not_depend_on_the_task_name(task):
    result = {"failed": True, "msg": "assertion failed"}
    assert rollout_failure(result, "upgrade", task=task)["phase"] == "upgrade"


@pytest.mark.parametrize("step", ["Health Check", "health\n", "x" * 41, 3, None, "", "../x"])
def test_failure_phase_takes_only_an_identifier_from_the_module(step):
    assert rollout_failure({"failed_phase": step, "msg": "m"}, "verify")["phase"] == "verify"


def test_failure_message_keeps_the_first_lines_and_the_last_one():
    lines = ["Traceback (most recent call last):", "  File x", "  line 3", "  line 4", "RuntimeError: boom"]
    failure = rollout_failure({"msg": "\n".join(lines) + "\n"}, "upgrade", task="Run it")
    assert failure["message"] == "Run it: Traceback (most recent call last): File x line 3 [...] RuntimeError: boom"


def test_failure_message_falls_back_to_stderr_and_is_bounded():
    failure = rollout_failure({"stderr": "e" * 5000}, "drain")
    assert failure["message"].startswith("eee") and len(failure["message"]) <= 300
    assert rollout_failure({}, "")["phase"] == "unknown"
    assert rollout_failure(None, "undrain") == {"phase": "undrain", "message": "failed"}
    assert rollout_failure({"unreachable": True}, "connect")["message"] == "unreachable"


# --- the summary -----------------------------------------------------------------------------------

ROLLOUT = {"action": "upgrade", "instance": "api", "target_release": " 2.0.0 "}


def test_summary_reports_every_host():
    hostvars = {
        "a": turn("upgraded", release="2.0.0", previous="1.0.0", failed_phase=None, message=""),
        "b": turn("unreachable", release=None, previous=None, failed_phase="connect", message="ssh: refused"),
        "c": {
            "__gunicorn_rollout_untouched_info": {"master": {"release": "1.0.0"}},
        },
    }
    summary = rollout_summary(hostvars, ["a", "b", "c"], ["a", "b", "c"], ROLLOUT)
    assert summary["instance"] == "api" and summary["action"] == "upgrade" and summary["target_release"] == "2.0.0"
    assert summary["hosts"]["a"] == {
        "status": "upgraded",
        "release": "2.0.0",
        "previous": "1.0.0",
        "failed_phase": None,
        "message": "",
    }
    assert summary["hosts"]["b"]["status"] == "unreachable"
    assert summary["hosts"]["b"]["failed_phase"] == "connect"
    assert summary["hosts"]["c"]["status"] == "untouched"
    assert summary["hosts"]["c"]["release"] == summary["hosts"]["c"]["previous"] == "1.0.0"
    assert summary["stopped"] is True and summary["ok"] is False


def test_summary_tells_a_host_that_left_the_play_from_one_that_failed():
    hostvars = {"gone": turn(None), "here": turn(None)}
    for name in hostvars:
        hostvars[name]["__gunicorn_rollout_phase"] = "upgrade"
    summary = rollout_summary(hostvars, ["gone", "here"], ["here"], ROLLOUT)
    assert summary["hosts"]["gone"]["status"] == "unreachable"
    assert summary["hosts"]["gone"]["failed_phase"] == "upgrade"
    assert summary["hosts"]["here"]["status"] == "failed"
    assert summary["stopped"] is False and summary["ok"] is False


def test_summary_untouched_host_that_did_not_answer_has_no_release():
    hostvars = {"a": {"__gunicorn_rollout_untouched_info": {"unreachable": True, "msg": "down"}}}
    entry = rollout_summary(hostvars, ["a"], ["a"], ROLLOUT)["hosts"]["a"]
    assert entry["status"] == "untouched" and entry["release"] is None and "did not answer" in entry["message"]


def test_summary_is_ok_only_when_every_host_is_upgraded_or_skipped():
    hostvars = {"a": turn("upgraded", release="2"), "b": turn("skipped", release="2")}
    assert rollout_summary(hostvars, ["a", "b"], ["a", "b"], ROLLOUT)["ok"] is True
    assert rollout_summary(hostvars, [], [], ROLLOUT)["ok"] is False
    hostvars["b"] = turn("rolled_back", release="1", previous="1", failed_phase="upgrade")
    assert rollout_summary(hostvars, ["a", "b"], ["a", "b"], ROLLOUT)["ok"] is False


def test_summary_counts_a_removal_as_done():
    hostvars = {"a": turn("removed", release=None, previous="2"), "b": turn("upgraded", release="2")}
    summary = rollout_summary(hostvars, ["a", "b"], ["a", "b"], ROLLOUT)
    assert summary["hosts"]["a"]["status"] == "removed" and summary["ok"] is True


def test_summary_does_not_pass_on_an_unknown_status():
    hostvars = {"a": turn("fine")}
    assert rollout_summary(hostvars, ["a"], ["a"], ROLLOUT)["hosts"]["a"]["status"] == "failed"


def test_summary_refuses_a_string_of_hosts():
    with pytest.raises(AnsibleFilterError):
        rollout_summary({}, "a", [], ROLLOUT)


# --- pip pins --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "pin"),
    [
        ("myapp==1.2.3", "1.2.3"),
        ("myapp == 1.2.3", "1.2.3"),
        ("myapp===1.2.3-local", "1.2.3-local"),
        ("myapp[redis,celery]==2.0.0rc1", "2.0.0rc1"),
        ('myapp==1.2.3; python_version >= "3.9"', "1.2.3"),
        ("myapp==1.2.3,<2", "1.2.3"),
        ("myapp<2,==1.2.3", "1.2.3"),
        ("my-app==1!2.0+local.7", "1!2.0+local.7"),
        ("myapp", ""),
        ("myapp>=1.2", ""),
        ("myapp~=1.2", ""),
        ("myapp==1.*", ""),
        ("myapp==1.0,==2.0", ""),
        ("myapp @ https://example.invalid/myapp-1.0.tar.gz", ""),
        ("/srv/wheels/myapp-1.2.3-py3-none-any.whl", ""),
        ("myapp==", ""),
        ("==1.2.3", ""),
        ("", ""),
        (None, ""),
        (123, ""),
    ],
)
def test_pip_pin(requirement, pin):
    assert pip_pin(requirement) == pin


def test_release_name_uses_the_pin_as_pip_reads_it():
    release_name = ReleaseNameFilters().filters()["release_name"]
    assert release_name("", ["myapp[extra] == 1.2.3 ; python_version > '3'"]) == "1.2.3"
    assert release_name("", ["myapp==1.*"]) == ""
    assert release_name("hotfix-1", ["myapp==1.2.3"]) == "hotfix-1"
    assert release_name("", ["/w/myapp-4.5.6-py3-none-any.whl"]) == "4.5.6"


# --- the release keep-list -------------------------------------------------------------------------


def test_keep_list_keeps_the_newest_and_the_running_release():
    finished = ["5", "4", "3", "2", "1"]
    assert release_keep_list(finished, 3, master="5", current="5") == ["3", "4", "5"]
    assert release_keep_list(finished, 1, master="5", current="5") == ["4", "5"]  # 4: the rollback target


def test_keep_list_keeps_an_older_master_current_and_its_rollback_target():
    finished = ["5", "4", "3", "2", "1"]
    # after a rollback to 2, with current still naming 3
    assert release_keep_list(finished, 1, master="2", current="3") == ["2", "3", "5"]


def test_keep_list_keeps_an_unfinished_release_only_when_running_or_current():
    assert release_keep_list(["2", "1"], 1, master="3-unfinished", current="") == ["2", "3-unfinished"]
    assert release_keep_list([], 3, master="", current="") == []
    assert release_keep_list(["1", "", None], 5, master="1", current="") == ["1"]


@pytest.mark.parametrize("keep", [0, -1, "x", None, True])
def test_keep_list_refuses_a_bad_count(keep):
    with pytest.raises(AnsibleFilterError, match="keep"):
        release_keep_list(["1"], keep)


def test_keep_list_refuses_a_string():
    with pytest.raises(AnsibleFilterError, match="list"):
        release_keep_list("1,2", 1)


# --- documentation ----------------------------------------------------------------------------------

# The ansible-doc of the venv running the tests (the project's, or a tests/matrix cell's).
ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"


@pytest.mark.skipif(not ANSIBLE_DOC.exists(), reason="needs ansible-doc beside this Python (make venv)")
@pytest.mark.parametrize("name", FILTERS)
def test_ansible_doc_renders_the_filter(name):
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / "build" / "collections"))
    result = subprocess.run(
        [str(ANSIBLE_DOC), "-t", "filter", "--json", f"graceful.gunicorn.{name}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[f"graceful.gunicorn.{name}"]
    assert doc["doc"]["name"] == name
    assert doc["doc"]["short_description"]
    assert "_input" in doc["doc"]["options"]
    assert doc["examples"].strip()
    assert doc["return"]["_value"]["description"]
    assert "WARNING" not in result.stderr.upper(), result.stderr


# --- staging ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting, action, serial, hosts, stages",
    [
        ("auto", "upgrade", 1, 3, True),
        ("auto", "upgrade", 1, 1, False),
        ("auto", "upgrade", "3", 3, False),
        ("auto", "upgrade", 0, 3, False),
        ("auto", "deploy", "100%", 10, False),
        ("auto", "deploy", "30%", 10, True),
        ("auto", "deploy", "10%", 5, True),
        ("auto", "upgrade", [1, "50%"], 4, True),
        ("auto", "upgrade", ["100%"], 4, False),
        (True, "upgrade", "100%", 4, True),
        ("yes", "deploy", "100%", 4, True),
        (False, "upgrade", 1, 4, False),
        ("false", "upgrade", 1, 4, False),
        ("auto", "reload", 1, 4, False),
        (True, "rollback", 1, 4, False),
        (True, "refresh", 1, 4, False),
    ],
)
def test_stage_when_the_rollout_has_more_than_one_batch(setting, action, serial, hosts, stages):
    assert rollout_stage(setting, action, serial, hosts) is stages


@pytest.mark.parametrize("setting, serial", [("sometimes", 1), ("auto", "fast"), ("auto", "x%")])
def test_stage_refuses_what_it_cannot_read(setting, serial):
    with pytest.raises(AnsibleFilterError, match="rollout_stage"):
        rollout_stage(setting, "upgrade", serial, 3)


def test_stage_report_counts_each_outcome_and_names_the_hosts_not_staged():
    hostvars = {
        "a": {"__gunicorn_rollout_stage": "staged"},
        "b": {"__gunicorn_rollout_stage": "live"},
        "c": {"__gunicorn_rollout_stage": "failed"},
        "d": {"__gunicorn_rollout_stage": "unreachable"},
        "e": {},
        "g": {"__gunicorn_rollout_stage": "absent"},
    }
    report = rollout_stage_report(hostvars, ["a", "b", "c", "d", "e", "f", "g"])
    assert (report["staged"], report["live"], report["failed"], report["unreachable"]) == (["a"], ["b"], ["c"], ["d"])
    assert (report["absent"], report["missing"]) == (["g"], ["e", "f"])
    assert (report["count"], report["ready"]) == (7, 3)
    assert report["line"] == "staged on 3 of 7 hosts (1 already serve it, 1 to be removed); not staged: c, d, e, f"
    assert (
        rollout_stage_report({"a": {"__gunicorn_rollout_stage": "staged"}}, ["a"])["line"] == "staged on 1 of 1 hosts"
    )
    with pytest.raises(AnsibleFilterError):
        rollout_stage_report(hostvars, "a")


def test_summary_notes_a_release_staged_on_a_host_the_rollout_stopped_before():
    hostvars = {
        "a": turn("failed", release="1.0.0", previous="1.0.0", failed_phase="stage", message="pip failed"),
        "b": {
            "__gunicorn_rollout_stage": "staged",
            "__gunicorn_rollout_untouched_info": {"master": {"release": "1.0.0"}},
        },
    }
    summary = rollout_summary(hostvars, ["a", "b"], ["a", "b"], {"action": "upgrade"})
    assert summary["hosts"]["a"]["failed_phase"] == "stage"
    assert summary["hosts"]["b"]["status"] == "untouched" and summary["hosts"]["b"]["release"] == "1.0.0"
    assert "the release is staged there" in summary["hosts"]["b"]["message"]
    assert summary["stopped"] and not summary["ok"]
    assert rollout_budget(hostvars, ["a", "b"], 0)["exceeded"]
