"""Table-driven tests of the refresh decisions, without processes."""

import random

import pytest

from graceful_arbiter import policy
from graceful_arbiter.policy import Decision, Limits, RefreshView, WorkerView

NOW = 1000.0


def w(pid, ready=True, retiring=None, killed=False, born=NOW - 100, ready_since=NOW - 50):
    return WorkerView(
        pid=pid,
        age=pid,
        born=born,
        ready=ready,
        retiring_since=retiring,
        killed=killed,
        ready_since=ready_since if ready else None,
    )


OLD = frozenset({1, 2, 3, 4})

DECIDE_CASES = [
    # (name, workers, limits, refresh, spawn_allowed, expected)
    ("first start spawns all", [], Limits(4), None, True, Decision(spawn=4)),
    ("steady state does nothing", [w(1), w(2)], Limits(2), None, True, Decision()),
    ("respawn backs off", [w(1)], Limits(2), None, False, Decision()),
    ("ttou retires the oldest", [w(1), w(2), w(3)], Limits(2), None, True, Decision(retire=(1,))),
    ("winch retires all", [w(1), w(2)], Limits(0), None, True, Decision(retire=(1, 2))),
    (
        "retiring past graceful timeout is killed once",
        [w(1, retiring=NOW - 31), w(2, retiring=NOW - 31, killed=True), w(3), w(4)],
        Limits(2, graceful_timeout=30),
        None,
        True,
        Decision(kill=(1,)),
    ),
    ("refresh starts with one surge worker", [w(p) for p in OLD], Limits(4), RefreshView(OLD), True, Decision(spawn=1)),
    (
        "refresh starts with a batch",
        [w(p) for p in OLD],
        Limits(4, batch_size=2),
        RefreshView(OLD),
        True,
        Decision(spawn=2),
    ),
    (
        "booting new worker: wait",
        [*[w(p) for p in OLD], w(5, ready=False)],
        Limits(4),
        RefreshView(OLD),
        True,
        Decision(),
    ),
    (
        "new worker ready: retire oldest, next surge",
        [*[w(p) for p in OLD], w(5)],
        Limits(4),
        RefreshView(OLD),
        True,
        Decision(spawn=1, retire=(1,)),
    ),
    (
        "half a batch ready: retire one, top the batch up",
        [*[w(p) for p in OLD], w(5), w(6, ready=False)],
        Limits(4, batch_size=2),
        RefreshView(OLD),
        True,
        Decision(spawn=1, retire=(1,)),
    ),
    (
        "last old worker replaced: finished",
        [w(4), w(5), w(6), w(7), w(8), w(1, retiring=NOW - 1)],
        Limits(4),
        RefreshView(OLD),
        True,
        Decision(retire=(4,), finished=True),
    ),
    (
        "an old worker crashed mid-refresh: capacity refilled",
        [w(2), w(3), w(4), w(5, ready=False)],
        Limits(4),
        RefreshView(OLD),
        False,
        Decision(spawn=1),
    ),
    (
        "memory refresh of one worker",
        [w(1), w(2), w(3), w(4)],
        Limits(4),
        RefreshView(frozenset({3})),
        True,
        Decision(spawn=1),
    ),
    (
        "memory refresh: only the target retires",
        [w(1), w(2), w(3), w(4), w(5)],
        Limits(4),
        RefreshView(frozenset({3})),
        True,
        Decision(retire=(3,), finished=True),
    ),
]


@pytest.mark.parametrize(
    ("workers", "limits", "refresh", "spawn_allowed", "expected"),
    [c[1:] for c in DECIDE_CASES],
    ids=[c[0] for c in DECIDE_CASES],
)
def test_decide(workers, limits, refresh, spawn_allowed, expected):
    assert policy.decide(workers, limits, NOW, refresh=refresh, spawn_allowed=spawn_allowed) == expected


def test_refresh_never_drops_capacity_whatever_the_boot_order():
    """Simulate many refreshes with random boot completion: ready capacity never goes below N."""
    rng = random.Random(7)
    for batch in (1, 2, 3):
        workers = {p: w(p) for p in range(1, 5)}
        refresh = RefreshView(frozenset(workers))
        next_pid, lowest = 5, 4
        for _step in range(200):
            d = policy.decide(list(workers.values()), Limits(4, batch_size=batch), NOW, refresh=refresh)
            for pid in d.retire:
                workers[pid] = w(pid, retiring=NOW)
            for _spawn in range(d.spawn):
                workers[next_pid] = w(next_pid, ready=False)
                next_pid += 1
            lowest = min(lowest, sum(1 for x in workers.values() if x.serving and x.ready))
            if d.finished:
                break
            booting = [p for p, x in workers.items() if x.serving and not x.ready]
            if booting:
                pid = rng.choice(booting)
                workers[pid] = w(pid)
        assert d.finished and lowest >= 4
        assert not {p for p, x in workers.items() if x.serving} & refresh.targets


OUTCOMES = [
    (False, False, 3, policy.HALT),
    (False, False, 4, policy.HALT),
    (False, False, None, policy.HALT),
    (False, False, 1, policy.BACK_OFF),
    (True, True, 3, policy.ABORT_REFRESH),
    (True, True, None, policy.ABORT_REFRESH),
    (True, False, 3, policy.BACK_OFF),
]


@pytest.mark.parametrize(("first_ready", "in_refresh", "code", "expected"), OUTCOMES)
def test_boot_failure_outcome(first_ready, in_refresh, code, expected):
    assert policy.boot_failure_outcome(first_ready, in_refresh, code) == expected


@pytest.mark.parametrize(("failures", "expected"), [(0, 0), (1, 10), (2, 20), (3, 40), (6, 320), (20, 320)])
def test_backoff_delay(failures, expected):
    assert policy.backoff_delay(failures, 10) == expected


def test_overdue_boots():
    workers = [
        w(1, ready=False, born=NOW - 10),
        w(2, ready=False, born=NOW - 1),
        w(3),
        w(4, ready=False, born=NOW - 10, retiring=NOW),
    ]
    assert policy.overdue_boots(workers, 5, NOW) == [1]
    assert policy.overdue_boots(workers, 0, NOW) == []


def test_periodic_delay_has_bounded_jitter():
    assert policy.periodic_delay(0, None) is None
    delays = [policy.periodic_delay(100, None, random.Random(i)) for i in range(50)]
    assert all(100 <= d <= 110 for d in delays) and len(set(delays)) > 1
    assert policy.periodic_delay(100, 0) == 100


def test_over_memory():
    assert policy.over_memory({1: 10, 2: 30, 3: None}, 20) == [2]
    assert policy.over_memory({1: 10}, 0) == []


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ([w(1), w(2)], True),
        ([w(1), w(2, ready=False)], False),
        ([w(1), w(2, ready_since=NOW - 0.2)], False),
        ([w(1), w(2, retiring=NOW, ready=False)], True),
    ],
)
def test_can_start_refresh(workers, expected):
    assert policy.can_start_refresh(workers, 2, NOW) is expected
