"""Table-driven tests of the binary upgrade's decisions (plugins/module_utils/upgrade_plan.py)."""

import re

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import upgrade_plan as plan

BASE = {
    "flavour": "graceful",
    "on_failure": "rollback",
    "expected_workers": 2,
    "old_initial": 2,
    "old_alive": True,
    "old_workers": 2,
    "old_ready": 2,
    "new_pid": 200,
    "new_alive": True,
    "new_workers": 2,
    "new_ready": 2,
    "health_configured": True,
    "health_ok": None,
    "deadline_passed": False,
    "sent": set(),
    "ttou_sent": 0,
    "drained": False,
}


def state(**changes):
    return plan.UpgradeState(**dict(BASE, **changes))


CASES = [
    # spawn
    ("usr2 first", state(phase="spawn", new_pid=None, new_alive=False), ("usr2", None)),
    ("wait for the new master", state(phase="spawn", sent={"usr2"}, new_pid=None, new_alive=False), ("wait", None)),
    ("new master seen", state(phase="spawn", sent={"usr2"}), ("advance", "new_ready")),
    (
        "new master never appeared",
        state(phase="spawn", sent={"usr2"}, new_pid=None, new_alive=False, deadline_passed=True),
        ("rollback", "spawn"),
    ),
    ("new master died at once", state(phase="spawn", sent={"usr2"}, new_alive=False), ("rollback", "spawn")),
    (
        "the arbiter reports its re-exec failed (the PID it names is not taken)",
        state(
            phase="spawn", sent={"usr2"}, new_pid=None, new_alive=False, spawn_failed="re-exec failed", spawn_quiet=True
        ),
        ("rollback", "spawn"),
    ),
    (
        "a failed re-exec report is not believed right after USR2",
        state(phase="spawn", sent={"usr2"}, new_pid=None, new_alive=False, spawn_failed="re-exec failed"),
        ("wait", None),
    ),
    (
        "a failed re-exec report while a checked new master runs is ignored",
        state(phase="spawn", sent={"usr2"}, spawn_failed="re-exec failed", spawn_quiet=True),
        ("advance", "new_ready"),
    ),
    # a PID offered as the second master was refused: the phase fails, whatever else looks fine
    (
        "victim in <pidfile>.2 during spawn",
        state(phase="spawn", sent={"usr2"}, new_pid=None, new_alive=False, refused="refused PID 9"),
        ("rollback", "spawn"),
    ),
    (
        "victim in <pidfile>.2 while baking",
        state(phase="bake", bake_done=True, refused="refused PID 9"),
        ("rollback", "bake"),
    ),
    (
        "victim in <pidfile>.2 after the old master was told to exit",
        state(phase="promote", old_alive=False, refused="refused PID 9"),
        ("fail", "promote"),
    ),
    ("victim with on_failure=leave", state(phase="new_ready", on_failure="leave", refused="x"), ("fail", "new_ready")),
    # new_ready
    ("all new workers ready", state(phase="new_ready"), ("advance", "health_new")),
    ("new workers booting", state(phase="new_ready", new_ready=1), ("wait", None)),
    ("too few new workers", state(phase="new_ready", new_workers=1, new_ready=1), ("wait", None)),
    ("new workers hang", state(phase="new_ready", new_ready=0, deadline_passed=True), ("rollback", "new_ready")),
    ("new master exits (import error)", state(phase="new_ready", new_alive=False), ("rollback", "new_ready")),
    ("old master vanished", state(phase="new_ready", old_alive=False), ("fail", "new_ready")),
    # health_new
    ("healthy with both", state(phase="health_new", health_ok=True), ("advance", "drain_old")),
    ("no health check", state(phase="health_new", health_configured=False), ("advance", "drain_old")),
    ("health undecided", state(phase="health_new"), ("wait", None)),
    ("health fails", state(phase="health_new", health_ok=False), ("rollback", "health_new")),
    ("health never passes", state(phase="health_new", deadline_passed=True), ("rollback", "health_new")),
    # drain_old, graceful: WINCH
    ("winch once", state(phase="drain_old"), ("winch_old", None)),
    ("draining", state(phase="drain_old", sent={"winch"}, old_workers=1), ("wait", None)),
    ("drained", state(phase="drain_old", sent={"winch"}, old_workers=0), ("advance", "bake")),
    (
        "drain stuck",
        state(phase="drain_old", sent={"winch"}, old_workers=1, deadline_passed=True),
        ("rollback", "drain_old"),
    ),
    ("new master dies while draining", state(phase="drain_old", new_alive=False), ("rollback", "drain_old")),
    # drain_old, stock: TTOU one by one down to one worker
    ("ttou first", state(phase="drain_old", flavour="stock", old_initial=3, old_workers=3), ("ttou_old", None)),
    (
        "ttou waits for the previous one",
        state(phase="drain_old", flavour="stock", old_initial=3, old_workers=3, ttou_sent=1),
        ("wait", None),
    ),
    (
        "ttou next",
        state(phase="drain_old", flavour="stock", old_initial=3, old_workers=2, ttou_sent=1),
        ("ttou_old", None),
    ),
    (
        "stock drained to one",
        state(phase="drain_old", flavour="stock", old_initial=3, old_workers=1, ttou_sent=2),
        ("advance", "bake"),
    ),
    (
        "stock single worker",
        state(phase="drain_old", flavour="stock", old_initial=1, old_workers=1),
        ("advance", "bake"),
    ),
    # bake
    ("baking", state(phase="bake", old_workers=0), ("wait", None)),
    ("baked", state(phase="bake", old_workers=0, bake_done=True), ("advance", "retire_old")),
    ("bake health fails", state(phase="bake", old_workers=0, health_ok=False), ("rollback", "bake")),
    ("new master dies in bake", state(phase="bake", new_alive=False), ("rollback", "bake")),
    ("leave on failure", state(phase="bake", health_ok=False, on_failure="leave"), ("fail", "bake")),
    # retire_old
    ("term old", state(phase="retire_old", old_workers=0), ("term_old", None)),
    ("old exiting", state(phase="retire_old", sent={"term_old"}), ("wait", None)),
    ("old gone", state(phase="retire_old", sent={"term_old"}, old_alive=False), ("advance", "promote")),
    ("old will not exit", state(phase="retire_old", sent={"term_old"}, deadline_passed=True), ("fail", "retire_old")),
    ("new dies after TERM old: no rollback", state(phase="retire_old", new_alive=False), ("fail", "retire_old")),
    # promote
    ("promoted, no unit", state(phase="promote", old_alive=False, pidfile_pid=200), ("done", None)),
    ("pidfile not renamed yet", state(phase="promote", old_alive=False, pidfile_pid=None), ("wait", None)),
    (
        "handed over but not promoted yet",
        state(phase="promote", old_alive=False, pidfile_pid=200, second_pidfile_pid=200),
        ("wait", None),
    ),
    (
        "promoted with unit",
        state(phase="promote", old_alive=False, pidfile_pid=200, unit_checked=True, unit_active=True, main_pid=200),
        ("done", None),
    ),
    (
        "unit lost the master",
        state(
            phase="promote",
            old_alive=False,
            pidfile_pid=200,
            unit_checked=True,
            unit_active=False,
            main_pid=None,
            deadline_passed=True,
        ),
        ("fail", "promote"),
    ),
    # rollback
    ("not drained: stop new", state(phase="rollback_restore"), ("advance", "rollback_stop_new")),
    (
        "drained: hup old",
        state(phase="rollback_restore", drained=True, old_workers=0, old_ready=0),
        ("rollback_hup_old", None),
    ),
    (
        "old workers coming back",
        state(phase="rollback_restore", drained=True, sent={"hup_old"}, old_workers=2, old_ready=1),
        ("wait", None),
    ),
    (
        "old workers back",
        state(phase="rollback_restore", drained=True, sent={"hup_old"}),
        ("advance", "rollback_stop_new"),
    ),
    (
        "old workers never back",
        state(phase="rollback_restore", drained=True, sent={"hup_old"}, old_ready=0, deadline_passed=True),
        ("fail", "rollback_restore"),
    ),
    ("term new", state(phase="rollback_stop_new"), ("term_new", None)),
    ("new stopping", state(phase="rollback_stop_new", sent={"term_new"}), ("wait", None)),
    ("kill new", state(phase="rollback_stop_new", sent={"term_new"}, deadline_passed=True), ("kill_new", None)),
    ("new gone", state(phase="rollback_stop_new", new_alive=False), ("advance", "rollback_verify")),
    ("new never seen", state(phase="rollback_stop_new", new_pid=None, new_alive=False), ("advance", "rollback_verify")),
    ("old healthy again", state(phase="rollback_verify", health_ok=True), ("rolled_back", None)),
    ("old unhealthy", state(phase="rollback_verify", health_ok=False), ("fail", "rollback_verify")),
    ("old gone in rollback", state(phase="rollback_verify", old_alive=False), ("fail", "rollback_verify")),
]


@pytest.mark.parametrize(("name", "observed", "expected"), CASES, ids=[c[0] for c in CASES])
def test_next_action(name, observed, expected):
    step = plan.next_action(observed)
    assert (step["action"], step["phase"]) == expected, step
    if step["action"] in ("fail", "rollback"):
        assert step["reason"]


def test_unknown_phase_is_an_error():
    with pytest.raises(ValueError):
        plan.next_action(state(phase="nonsense"))


def test_promotion_failure_names_every_problem():
    step = plan.next_action(
        state(
            phase="promote",
            old_alive=False,
            pidfile_pid=100,
            unit_checked=True,
            unit_active=False,
            main_pid=100,
            deadline_passed=True,
        )
    )
    assert "pidfile names 100" in step["reason"]
    assert "no longer active" in step["reason"]
    assert "MainPID is 100" in step["reason"]


def test_the_module_has_an_action_for_everything_the_plan_returns():
    from ansible_collections.graceful.gunicorn.plugins.modules import gunicorn_upgrade

    returned = {expected[0] for _name, _observed, expected in CASES}
    assert returned <= set(gunicorn_upgrade.ACTIONS), returned - set(gunicorn_upgrade.ACTIONS)
    documented = set(re.findall(r"[a-z_0-9]+", plan.next_action.__doc__.split("Actions:")[1]))
    assert set(gunicorn_upgrade.ACTIONS) <= documented


def test_state_update_refuses_an_unknown_field():
    observed = state(phase="spawn")
    observed.update(new_pid=300, new_alive=True)
    assert (observed.new_pid, observed.new_alive) == (300, True)
    with pytest.raises(AttributeError, match="no field 'new_pidd'"):
        observed.update(new_pidd=300)
