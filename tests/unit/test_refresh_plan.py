"""Table-driven tests of gunicorn_reload's and gunicorn_refresh's decisions (module_utils/refresh_plan.py)."""

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_recycle as recycle
from ansible_collections.graceful.gunicorn.plugins.module_utils import refresh_plan as plan


def W(pid, ready=True):
    return {"pid": pid, "ready": ready}


# ---------------------------------------------------------------------------------------------------------------
# reload
# ---------------------------------------------------------------------------------------------------------------

RELOAD = {
    "phase": "new_ready",
    "flavour": "stock",
    "channel": False,
    "master_alive": True,
    "expected_workers": 2,
    "old_pids": [10, 11],
    "workers": [W(20), W(21)],
    "reload": None,
    "refresh": None,
    "boot_failure": None,
    "health_configured": True,
    "health_ok": None,
    "deadline_passed": False,
    "sent": set(),
}


def reload_state(**changes):
    return plan.ReloadState(**dict(RELOAD, **changes))


def graceful(**changes):
    base = {"flavour": "graceful", "channel": True, "refresh": {"id": 4, "trigger": "hup", "outcome": "succeeded"}}
    base.update(changes)
    return reload_state(**base)


RELOAD_CASES = [
    ("hup first", reload_state(phase="hup"), ("hup", None)),
    ("hup sent", reload_state(phase="hup", sent={"hup"}), ("advance", "new_ready")),
    ("stock: all new and ready", reload_state(), ("advance", "health")),
    ("stock: an old worker still draining", reload_state(workers=[W(11), W(20), W(21)]), ("wait", None)),
    ("stock: new worker not ready", reload_state(workers=[W(20), W(21, False)]), ("wait", None)),
    ("stock: too few new workers", reload_state(workers=[W(20)]), ("wait", None)),
    ("stock: too many workers", reload_state(workers=[W(20), W(21), W(22)]), ("wait", None)),
    ("stock: deadline", reload_state(workers=[W(20), W(21, False)], deadline_passed=True), ("fail", "new_ready")),
    ("stock: master halted", reload_state(master_alive=False, workers=[]), ("fail", "new_ready")),
    ("graceful: refresh succeeded", graceful(), ("advance", "health")),
    ("graceful: refresh running", graceful(refresh={"id": 4, "trigger": "hup", "outcome": "running"}), ("wait", None)),
    ("graceful: refresh not started", graceful(refresh=None), ("wait", None)),
    (
        "graceful: succeeded but a retiree lingers",
        graceful(workers=[W(10, False), W(20), W(21)]),
        ("wait", None),
    ),
    (
        "graceful: refresh failed",
        graceful(refresh={"id": 4, "trigger": "hup", "outcome": "failed", "error": "new worker (pid:30) exit 3"}),
        ("fail", "new_ready"),
    ),
    (
        "graceful: config rejected",
        graceful(refresh=None, reload={"outcome": "failed", "error": "SyntaxError"}),
        ("fail", "hup"),
    ),
    ("graceful: deadline before the refresh", graceful(refresh=None, deadline_passed=True), ("fail", "new_ready")),
    ("health passes", reload_state(phase="health", health_ok=True), ("done", None)),
    ("no health check", reload_state(phase="health", health_configured=False), ("done", None)),
    ("health fails", reload_state(phase="health", health_ok=False), ("fail", "health")),
]


@pytest.mark.parametrize(("name", "observed", "expected"), RELOAD_CASES, ids=[c[0] for c in RELOAD_CASES])
def test_reload_step(name, observed, expected):
    step = plan.reload_step(observed)
    assert (step["action"], step["phase"]) == expected, step
    if step["action"] == "fail":
        assert step["reason"]


def test_reload_failure_names_the_arbiter_reason_and_the_old_generation():
    step = plan.reload_step(
        graceful(
            refresh={"id": 4, "trigger": "hup", "outcome": "failed", "error": "new worker (pid:30) exited with code 3"},
            boot_failure="exited with code 3 (import error)",
        )
    )
    assert "exited with code 3" in step["reason"]
    assert "old generation keeps serving" in step["reason"]


def test_stock_master_exit_explains_the_halt():
    step = plan.reload_step(reload_state(master_alive=False))
    assert "halts" in step["reason"]


def test_reload_unknown_phase():
    with pytest.raises(ValueError):
        plan.reload_step(reload_state(phase="nope"))


# ---------------------------------------------------------------------------------------------------------------
# stock refresh
# ---------------------------------------------------------------------------------------------------------------

STOCK = {
    "phase": "grow",
    "master_alive": True,
    "expected_workers": 2,
    "targets_left": 2,
    "batch": 1,
    "ttin_sent": 0,
    "ttou_sent": 0,
    "batch_new": [],
    "workers": 2,
    "health_configured": False,
    "health_ok": None,
    "deadline_passed": False,
}


def stock(**changes):
    return plan.StockRefreshState(**dict(STOCK, **changes))


STOCK_CASES = [
    ("ttin", stock(), ("ttin", None)),
    ("wait for the fork", stock(ttin_sent=1), ("wait", None)),
    ("no fork after ttin", stock(ttin_sent=1, deadline_passed=True), ("fail", "grow")),
    ("second ttin of a batch of two", stock(batch=2, ttin_sent=1, batch_new=[W(20, False)], workers=3), ("ttin", None)),
    ("batch forked", stock(ttin_sent=1, batch_new=[W(20, False)], workers=3), ("advance", "new_ready")),
    ("new worker booting", stock(phase="new_ready", batch_new=[W(20, False)], workers=3), ("wait", None)),
    ("new worker ready", stock(phase="new_ready", batch_new=[W(20)], workers=3), ("advance", "retire")),
    (
        "new worker never ready",
        stock(phase="new_ready", batch_new=[W(20, False)], workers=3, deadline_passed=True),
        ("rollback", "new_ready"),
    ),
    ("master halted (boot error)", stock(phase="new_ready", master_alive=False), ("fail", "new_ready")),
    ("ttou", stock(phase="retire", batch_new=[W(20)], workers=3), ("ttou", None)),
    ("retiree still running", stock(phase="retire", batch_new=[W(20)], workers=3, ttou_sent=1), ("wait", None)),
    (
        "retiree stuck",
        stock(phase="retire", batch_new=[W(20)], workers=3, ttou_sent=1, deadline_passed=True),
        ("fail", "retire"),
    ),
    (
        "second ttou after the first retiree left",
        stock(phase="retire", batch=2, batch_new=[W(20), W(21)], workers=3, ttou_sent=1),
        ("ttou", None),
    ),
    (
        "no second ttou while the first retiree runs",
        stock(phase="retire", batch=2, batch_new=[W(20), W(21)], workers=4, ttou_sent=1),
        ("wait", None),
    ),
    (
        "batch done, more left",
        stock(phase="retire", batch_new=[W(20)], ttou_sent=1, targets_left=1),
        ("next_batch", None),
    ),
    ("all done", stock(phase="retire", batch_new=[W(20)], ttou_sent=1, targets_left=0), ("advance", "health")),
    (
        "remove the stuck worker",
        stock(phase="rollback", batch_new=[W(20, False)], workers=3),
        ("remove_stuck", "rollback"),
    ),
    ("stuck removed, nothing else", stock(phase="rollback", batch_new=[], workers=2), ("rolled_back", None)),
    (
        "a ready new worker stays: ttou an original",
        stock(phase="rollback", batch=2, batch_new=[W(20)], workers=3),
        ("ttou", None),
    ),
    (
        "rollback retiree leaving",
        stock(phase="rollback", batch=2, batch_new=[W(20)], workers=3, ttou_sent=1),
        ("wait", None),
    ),
    (
        "rollback done",
        stock(phase="rollback", batch=2, batch_new=[W(20)], workers=2, ttou_sent=1),
        ("rolled_back", None),
    ),
    ("healthy", stock(phase="health", health_configured=True, health_ok=True), ("done", None)),
    ("unhealthy", stock(phase="health", health_configured=True, health_ok=False), ("fail", "health")),
]


@pytest.mark.parametrize(("name", "observed", "expected"), STOCK_CASES, ids=[c[0] for c in STOCK_CASES])
def test_stock_refresh_step(name, observed, expected):
    step = plan.stock_refresh_step(observed)
    assert (step["action"], step["phase"]) == expected, step


def test_remove_stuck_names_the_worker():
    step = plan.stock_refresh_step(stock(phase="rollback", batch_new=[W(20), W(21, False)], workers=4))
    assert step["reason"] == "21"


def simulate_stock(workers, batch_size):
    """Run the plan against a model of gunicorn's TTIN/TTOU: the count never drops below the start."""
    alive = list(range(100, 100 + workers))  # oldest first
    next_pid = 200
    sizes = plan.batches(workers, batch_size)
    targets = set(alive)
    state = stock(expected_workers=workers, phase="grow", batch=sizes[0])
    known = set(alive)
    lowest = len(alive)
    for _turn in range(1000):
        state.update(
            batch_new=[W(p) for p in alive if p not in known],
            workers=len(alive),
            targets_left=len(targets & set(alive)),
        )
        step = plan.stock_refresh_step(state)
        if step["action"] == "ttin":
            state.ttin_sent += 1
            alive.append(next_pid)
            next_pid += 1
        elif step["action"] == "ttou":
            state.ttou_sent += 1
            alive.pop(0)
        elif step["action"] == "advance":
            state.phase = step["phase"]
        elif step["action"] == "next_batch":
            sizes = sizes[1:]
            known = set(alive)
            state.update(phase="grow", batch=min(sizes[0], len(targets & known)), ttin_sent=0, ttou_sent=0)
        elif step["action"] == "done":
            return alive, targets, lowest
        else:
            raise AssertionError(step)
        lowest = min(lowest, len(alive))
    raise AssertionError("no end")


@pytest.mark.parametrize(("workers", "batch_size"), [(1, 1), (2, 1), (4, 3), (5, 2), (3, 5)])
def test_stock_refresh_replaces_every_worker_without_dropping_below(workers, batch_size):
    alive, targets, lowest = simulate_stock(workers, batch_size)
    assert len(alive) == workers
    assert not targets & set(alive)
    assert lowest == workers


@pytest.mark.parametrize(
    ("targets", "size", "sizes"),
    [(0, 1, []), (1, 1, [1]), (5, 2, [2, 2, 1]), (4, 2, [2, 2]), (2, 9, [2]), (3, 0, [1, 1, 1])],
)
def test_batches(targets, size, sizes):
    assert plan.batches(targets, size) == sizes


# ---------------------------------------------------------------------------------------------------------------
# arbiter refresh
# ---------------------------------------------------------------------------------------------------------------

GRACEFUL = {
    "phase": "refresh",
    "master_alive": True,
    "request_id": 3,
    "last": None,
    "boot_failure": None,
    "health_configured": False,
    "health_ok": None,
    "deadline_passed": False,
}


def arb(**changes):
    return plan.GracefulRefreshState(**dict(GRACEFUL, **changes))


GRACEFUL_CASES = [
    ("send the request", arb(phase="request", request_id=None), ("request", None)),
    ("request sent", arb(phase="request"), ("advance", "refresh")),
    ("no refresh yet", arb(), ("wait", None)),
    ("an older refresh", arb(last={"id": 1, "request_id": 2, "outcome": "succeeded"}), ("wait", None)),
    ("ours succeeded", arb(last={"id": 2, "request_id": 3, "outcome": "succeeded"}), ("advance", "health")),
    (
        "ours succeeded, retirees exiting",
        arb(last={"id": 2, "request_id": 3, "outcome": "succeeded"}, old_left=1),
        ("wait", None),
    ),
    (
        "retirees never exit",
        arb(last={"id": 2, "request_id": 3, "outcome": "succeeded"}, old_left=1, deadline_passed=True),
        ("fail", "refresh"),
    ),
    ("a later one covered ours", arb(last={"id": 3, "request_id": 4, "outcome": "succeeded"}), ("advance", "health")),
    ("ours failed", arb(last={"id": 2, "request_id": 3, "outcome": "failed", "error": "x"}), ("fail", "refresh")),
    ("ours aborted", arb(last={"id": 2, "request_id": 3, "outcome": "aborted", "error": "WINCH"}), ("fail", "refresh")),
    ("deadline", arb(deadline_passed=True), ("fail", "refresh")),
    ("master gone", arb(master_alive=False), ("fail", "refresh")),
    ("healthy", arb(phase="health", health_configured=True, health_ok=True), ("done", None)),
]


@pytest.mark.parametrize(("name", "observed", "expected"), GRACEFUL_CASES, ids=[c[0] for c in GRACEFUL_CASES])
def test_graceful_refresh_step(name, observed, expected):
    step = plan.graceful_refresh_step(observed)
    assert (step["action"], step["phase"]) == expected, step


def test_graceful_failure_carries_the_boot_failure():
    step = plan.graceful_refresh_step(
        arb(
            last={"id": 2, "request_id": 3, "outcome": "failed", "error": "new worker (pid:9) not ready"},
            boot_failure="not ready: status 500",
        )
    )
    assert "status 500" in step["reason"] and "old workers keep serving" in step["reason"]


# ---------------------------------------------------------------------------------------------------------------
# preload detection
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "argv", "config", "preload"),
    [
        ({"config": {"preload_app": True}}, [], None, True),
        ({"config": {"preload_app": False}}, ["--preload"], "preload_app = True", False),
        (None, ["gunicorn", "--preload", "app:app"], None, True),
        (None, ["gunicorn"], "workers = 2\npreload_app = True\n", True),
        (None, ["gunicorn"], "preload_app = False\n", False),
        (None, ["gunicorn"], "workers = 2\n", False),
        (None, ["gunicorn"], "preload_app = os.environ.get('P') == '1'\n", None),
        (None, ["gunicorn"], None, None),
    ],
)
def test_preload_of(status, argv, config, preload):
    assert recycle.preload_of(status, argv, config) is preload
