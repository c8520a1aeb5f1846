"""The rollout's run-once tasks: where they run, what stops the rollout, what the summary and the checks say."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.gunicorn.plugins.filter.rollout_budget import rollout_budget
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_hook import rollout_hook
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_stage import rollout_stage
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_summary import rollout_summary
from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import rollout_problems

ROLLOUT = {
    "action": "upgrade",
    "instance": "api",
    "target_release": "2.0.0",
    "max_fail_percentage": 0.0,
    "before_switch_tasks": "/srv/hooks/migrate.yml",
    "after_rollout_tasks": "/srv/hooks/contract.yml",
    "run_once_on": "host",
}


def staged(stage="staged"):
    return {"__gunicorn_rollout_stage": stage}


def done(status, **extra):
    return {"__gunicorn_rollout_started": True, "gunicorn_rollout_result": {"status": status, **extra}}


# --- before the first switch ---------------------------------------------------------------------------


def test_before_switch_runs_on_the_first_host_with_the_release_installed():
    hostvars = {"a": staged("absent"), "b": staged("staged"), "c": staged("live")}
    decision = rollout_hook(hostvars, ["a", "b", "c"], "before_switch", ROLLOUT)
    assert decision == {
        "run": True,
        "host": "b",
        "tasks": "/srv/hooks/migrate.yml",
        "on": "host",
        "reason": "the first host with the release installed",
    }
    # in the order of the hosts, not of hostvars
    assert rollout_hook(hostvars, ["c", "b"], "before_switch", ROLLOUT)["host"] == "c"


def test_before_switch_does_not_run_after_a_stage_failure_beyond_the_budget():
    hostvars = {
        "a": {**staged("failed"), **done("failed", failed_phase="stage")},
        "b": staged(),
        "c": staged(),
    }
    decision = rollout_hook(hostvars, ["a", "b", "c"], "before_switch", ROLLOUT)
    assert decision["run"] is False and "stopped" in decision["reason"]
    # within a budget of 50 % it runs, on the first host that has the release
    within_budget = dict(ROLLOUT, max_fail_percentage=50)
    assert rollout_hook(hostvars, ["a", "b", "c"], "before_switch", within_budget)["host"] == "b"


def test_before_switch_without_an_installed_release_or_a_task_file_does_not_run():
    assert rollout_hook({"a": {}}, ["a"], "before_switch", ROLLOUT)["reason"] == "no host has the release installed"
    decision = rollout_hook({"a": staged()}, ["a"], "before_switch", dict(ROLLOUT, before_switch_tasks=""))
    assert decision["run"] is False and "gunicorn_before_switch_tasks" in decision["reason"]


def test_on_the_controller_the_host_is_still_chosen_to_carry_the_outcome():
    decision = rollout_hook({"a": staged()}, ["a"], "before_switch", dict(ROLLOUT, run_once_on="controller"))
    assert (decision["run"], decision["host"], decision["on"]) == (True, "a", "controller")


# --- after the rollout ---------------------------------------------------------------------------------


def test_after_rollout_runs_only_when_every_host_was_upgraded_or_had_nothing_to_do():
    hostvars = {"a": done("upgraded"), "b": done("skipped"), "c": done("upgraded")}
    decision = rollout_hook(hostvars, ["a", "b", "c"], "after_rollout", ROLLOUT)
    assert (decision["run"], decision["host"], decision["tasks"]) == (True, "a", "/srv/hooks/contract.yml")
    for status in ("rolled_back", "failed", "unreachable"):
        hostvars["b"] = done(status)
        decision = rollout_hook(hostvars, ["a", "b", "c"], "after_rollout", ROLLOUT)
        assert decision["run"] is False and decision["reason"] == "not every host was upgraded: b"
    hostvars["b"] = {}  # untouched: the rollout stopped before it
    assert rollout_hook(hostvars, ["a", "b", "c"], "after_rollout", ROLLOUT)["run"] is False


@pytest.mark.parametrize(
    ("hosts", "phase", "rollout"),
    [
        ("a", "before_switch", ROLLOUT),
        (["a"], "during", ROLLOUT),
        (["a"], "before_switch", "upgrade"),
        (["a"], "before_switch", dict(ROLLOUT, run_once_on="everywhere")),
    ],
)
def test_hook_refuses_what_it_cannot_read(hosts, phase, rollout):
    with pytest.raises(AnsibleFilterError):
        rollout_hook({"a": staged()}, hosts, phase, rollout)


# --- what a failure stops ------------------------------------------------------------------------------


def test_a_failed_task_before_the_switch_stops_the_rollout_whatever_the_budget():
    hostvars = {"a": done("failed", failed_phase="before_switch"), "b": staged()}
    hooks = {"before_switch": {"run": True, "host": "a", "ok": False, "message": "migration failed"}}
    assert rollout_budget(hostvars, ["a", "b"], 100, hooks=hooks)["exceeded"] is True
    passed = {"before_switch": {"run": True, "ok": True}}
    assert rollout_budget(hostvars, ["a", "b"], 100, hooks=passed)["exceeded"] is False
    # run without an outcome: its host left the play in the middle of the task file
    assert rollout_budget(hostvars, ["a", "b"], 100, hooks={"before_switch": {"run": True}})["exceeded"] is True
    # a failure after the rollout stops nothing: every host has switched already
    after = {"after_rollout": {"run": True, "ok": False}}
    assert rollout_budget({"a": done("upgraded")}, ["a"], 0, hooks=after)["exceeded"] is False


def test_stage_is_automatic_when_tasks_run_before_the_switch():
    assert rollout_stage("auto", "deploy", "100%", 3) is False
    assert rollout_stage("auto", "deploy", "100%", 3, before_switch=True) is True
    assert rollout_stage("false", "deploy", "100%", 3, before_switch=True) is False
    assert rollout_stage("auto", "reload", 1, 3, before_switch=True) is False


# --- the summary ---------------------------------------------------------------------------------------


def test_summary_reports_each_task_file_and_fails_on_a_failed_one():
    hostvars = {"a": done("upgraded", release="2.0.0"), "b": done("upgraded", release="2.0.0")}
    hooks = {
        "before_switch": dict(rollout_hook({"a": staged()}, ["a"], "before_switch", ROLLOUT), ok=True, message=""),
        "after_rollout": dict(rollout_hook(hostvars, ["a", "b"], "after_rollout", ROLLOUT), ok=False, message="boom"),
    }
    summary = rollout_summary(hostvars, ["a", "b"], ["a", "b"], ROLLOUT, hooks=hooks)
    assert summary["hooks"] == {
        "after_rollout": {
            "tasks": "/srv/hooks/contract.yml",
            "status": "failed",
            "host": "a",
            "on": "host",
            "message": "boom",
        },
        "before_switch": {"tasks": "/srv/hooks/migrate.yml", "status": "ok", "host": "a", "on": "host", "message": ""},
    }
    assert summary["ok"] is False
    hooks["after_rollout"]["ok"] = True
    assert rollout_summary(hostvars, ["a", "b"], ["a", "b"], ROLLOUT, hooks=hooks)["ok"] is True


def test_summary_says_why_a_task_file_did_not_run_and_leaves_out_unset_ones():
    hostvars = {"a": done("rolled_back")}
    hooks = {
        "after_rollout": rollout_hook(hostvars, ["a"], "after_rollout", ROLLOUT),
        "before_switch": rollout_hook({}, ["a"], "before_switch", dict(ROLLOUT, before_switch_tasks="")),
    }
    summary = rollout_summary(hostvars, ["a"], ["a"], ROLLOUT, hooks=hooks)
    assert list(summary["hooks"]) == ["after_rollout"]
    assert summary["hooks"]["after_rollout"]["status"] == "not_run"
    assert summary["hooks"]["after_rollout"]["message"] == "not every host was upgraded: a"
    assert rollout_summary(hostvars, ["a"], ["a"], ROLLOUT)["hooks"] == {}


# --- the checks ----------------------------------------------------------------------------------------


def problems_for(action="upgrade", **values):
    values.setdefault("gunicorn_release", "2.0.0")
    values.setdefault("gunicorn_app_package", "api")
    return rollout_problems(values, action)


def test_run_once_tasks_are_checked_like_the_drain_tasks(tmp_path):
    outside = tmp_path / "migrate.yml"
    outside.write_text("- ansible.builtin.debug: {msg: hi}\n")
    (found,) = problems_for(gunicorn_before_switch_tasks=str(outside))
    assert found.startswith("gunicorn_before_switch_tasks") and "gunicorn_hook_dirs" in found
    assert problems_for(gunicorn_hook_dirs=[str(tmp_path)], gunicorn_after_rollout_tasks=str(outside)) == []
    (found,) = problems_for(gunicorn_hook_dirs=[str(tmp_path)], gunicorn_after_rollout_tasks="migrate.sh")
    assert found.startswith("gunicorn_after_rollout_tasks") and "task file" in found


def test_run_once_settings_that_cannot_work_are_refused(tmp_path):
    hook = tmp_path / "migrate.yml"
    hook.write_text("[]\n")
    dirs = [str(tmp_path)]
    (found,) = problems_for(gunicorn_hook_dirs=dirs, gunicorn_before_switch_tasks=str(hook), gunicorn_stage=False)
    assert found.startswith("gunicorn_before_switch_tasks") and "gunicorn_stage" in found
    (found,) = problems_for(gunicorn_run_once_on="everywhere")
    assert found.startswith("gunicorn_run_once_on") and "host or controller" in found
    (found,) = problems_for("reload", gunicorn_hook_dirs=dirs, gunicorn_before_switch_tasks=str(hook))
    assert found.startswith("gunicorn_before_switch_tasks") and "reload" in found


def test_after_rollout_counts_a_removal_as_done_and_runs_where_the_release_runs():
    hostvars = {"a": done("removed"), "b": done("upgraded")}
    decision = rollout_hook(hostvars, ["a", "b"], "after_rollout", ROLLOUT)
    assert (decision["run"], decision["host"]) == (True, "b")
    decision = rollout_hook({"a": done("removed")}, ["a"], "after_rollout", ROLLOUT)
    assert decision["run"] is False and "removed" in decision["reason"]


def test_summary_takes_run_once_tasks_without_an_outcome_as_failed():
    hook = rollout_hook({"a": staged()}, ["a"], "before_switch", ROLLOUT)
    summary = rollout_summary({"a": staged()}, ["a"], [], ROLLOUT, hooks={"before_switch": hook})
    assert summary["hooks"]["before_switch"]["status"] == "failed"
    assert summary["hooks"]["before_switch"]["message"] == "a stopped answering while the tasks ran"
    assert summary["ok"] is False
