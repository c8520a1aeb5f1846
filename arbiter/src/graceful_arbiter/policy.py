"""What the master does next, decided without touching a process.

The arbiter turns its workers into `WorkerView`s and asks `decide()`; it then sends the signals and
forks the workers the `Decision` names. Everything time-dependent takes `now` (time.monotonic()).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence

# A boot failure's outcome, see `boot_failure_outcome`.
HALT = "halt"
ABORT_REFRESH = "abort-refresh"
BACK_OFF = "back-off"

BACKOFF_MAX_FACTOR = 32


@dataclasses.dataclass(frozen=True)
class WorkerView:
    pid: int
    age: int  # gunicorn's spawn counter: lower is older
    born: float  # when it was forked
    ready: bool = False
    ready_since: float | None = None
    retiring_since: float | None = None  # SIGTERM sent at
    killed: bool = False  # SIGKILL sent

    @property
    def serving(self) -> bool:
        """Counted as capacity: not on its way out."""
        return self.retiring_since is None and not self.killed


@dataclasses.dataclass(frozen=True)
class Limits:
    num_workers: int
    batch_size: int = 1
    boot_timeout: float = 120.0
    graceful_timeout: float = 30.0


@dataclasses.dataclass(frozen=True)
class RefreshView:
    targets: frozenset  # pids this refresh replaces


@dataclasses.dataclass(frozen=True)
class Decision:
    spawn: int = 0
    retire: tuple = ()  # SIGTERM these, oldest first
    kill: tuple = ()  # SIGKILL these: retiring for longer than the graceful timeout
    finished: bool = False  # the refresh in progress has replaced all its targets


def overdue_boots(workers: Iterable[WorkerView], boot_timeout: float, now: float) -> list[int]:
    """Workers still not ready `boot_timeout` seconds after their fork."""
    if boot_timeout <= 0:
        return []
    return [w.pid for w in workers if w.serving and not w.ready and now - w.born >= boot_timeout]


def decide(
    workers: Sequence[WorkerView],
    limits: Limits,
    now: float,
    refresh: RefreshView | None = None,
    spawn_allowed: bool = True,
) -> Decision:
    """Signals to send and workers to fork so that capacity holds and the refresh moves on.

    Capacity is the number of ready workers that are not retiring. A refresh keeps
    `batch_size` extra workers booting while targets remain, and retires the oldest target for
    each ready worker above `num_workers`, so capacity never drops below what it was.
    """
    kill = tuple(
        w.pid
        for w in workers
        if w.retiring_since is not None and not w.killed and now - w.retiring_since >= limits.graceful_timeout
    )
    serving = [w for w in workers if w.serving]
    ready = [w for w in serving if w.ready]

    if refresh is None:
        excess = len(serving) - limits.num_workers
        # Like gunicorn's manage_workers (TTOU, WINCH): the oldest go first.
        retire = tuple(w.pid for w in sorted(serving, key=lambda w: w.age)[: max(0, excess)])
        spawn = max(0, -excess) if spawn_allowed else 0
        return Decision(spawn=spawn, retire=retire, kill=kill)

    old = sorted((w for w in serving if w.pid in refresh.targets), key=lambda w: w.age)
    new_booting = [w for w in serving if w.pid not in refresh.targets and not w.ready]
    n_retire = min(len(old), max(0, len(ready) - limits.num_workers))
    retire = tuple(w.pid for w in old[:n_retire])
    old_left = len(old) - n_retire
    wanted = limits.num_workers + min(limits.batch_size, old_left)
    spawn = max(0, wanted - (len(serving) - n_retire))
    finished = old_left == 0 and not new_booting
    return Decision(spawn=spawn, retire=retire, kill=kill, finished=finished)


def boot_failure_outcome(first_generation_ready: bool, in_refresh: bool, exit_code: int | None) -> str:
    """What a new worker's failure to become ready means for the master.

    Before the first generation ever became ready, gunicorn's rule holds: a worker that cannot
    boot (exit code 3 or 4, or no exit code: a failed health call or a boot timeout) stops the
    server, so a broken deployment fails loudly instead of looping. Afterwards healthy workers
    exist and must keep serving: a refresh is aborted, a plain respawn backs off.
    """
    if not first_generation_ready:
        if exit_code in (None, 3, 4):
            return HALT
        return BACK_OFF
    if in_refresh:
        return ABORT_REFRESH
    return BACK_OFF


def backoff_delay(consecutive_failures: int, base: float) -> float:
    """0 without failures, then base, 2*base, 4*base ... capped at BACKOFF_MAX_FACTOR*base."""
    if consecutive_failures <= 0 or base <= 0:
        return 0.0
    return base * min(2 ** (consecutive_failures - 1), BACKOFF_MAX_FACTOR)


def periodic_delay(interval: float, jitter: float | None, rng: random.Random = random) -> float | None:
    """Seconds until the next periodic refresh, or None when periodic refresh is off."""
    if interval <= 0:
        return None
    spread = interval / 10 if jitter is None else jitter
    return interval + rng.uniform(0, spread)


def over_memory(usage: dict, ceiling: int) -> list[int]:
    """Pids whose memory (bytes, None when unreadable) exceeds the ceiling (0: none)."""
    if ceiling <= 0:
        return []
    return sorted(pid for pid, used in usage.items() if used is not None and used > ceiling)


SETTLE_SECONDS = 1.0


def can_start_refresh(
    workers: Sequence[WorkerView], num_workers: int, now: float, settle: float = SETTLE_SECONDS
) -> bool:
    """A refresh starts from a settled fleet: nobody booting, every worker ready for `settle` seconds.

    The settling time keeps a refresh right after another (a HUP just after a refresh) from
    sending SIGTERM to a worker that reported ready a moment ago and may not be accepting yet.
    """
    serving = [w for w in workers if w.serving]
    return num_workers > 0 and all(
        w.ready and w.ready_since is not None and now - w.ready_since >= settle for w in serving
    )
