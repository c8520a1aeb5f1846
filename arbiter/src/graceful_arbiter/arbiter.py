"""GracefulArbiter: gunicorn's Arbiter with recycling that never takes the server down.

What differs from gunicorn's master, handler by handler:

- manage_workers: asks `policy.decide()` what to fork, retire (SIGTERM) and kill (SIGKILL after
  graceful_timeout). A refresh (periodic, on demand, HUP, memory ceiling, watched files) boots new
  workers first and retires the oldest only as new ones report ready.
- reap_workers: a new worker that exits before it was ready halts the server only before the
  first generation was ever ready; afterwards it aborts the refresh or backs the respawn off.
- reload (HUP): applies the environment file (envfile.py), reloads the configuration, keeps the
  listeners of unchanged addresses (none bound or closed under socket activation), then refreshes
  through the same path.
- handle_winch: gracefully stops this master's workers even when not daemonized.
- reexec (USR2): a failure between fork and exec ends only the forked child; under socket
  activation the listeners are handed over at fds 3..n+2, where LISTEN_FDS says they are.
- stop (TERM): closes this master's listeners, then retires each worker once, drained.
- halt: an old master leaving behind a re-executed child writes the child's PID into the pidfile
  (the unit's PIDFile=) before it exits, so systemd follows the new master.
- the control socket is per master (<stem>.<pid>.<ext>) and answers `graceful status|refresh`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import gc
import importlib
import itertools
import os
import queue
import select
import signal
import sys
import threading
import time
from collections import deque

from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from graceful_arbiter import __version__, envfile, listeners, memory, policy, readiness
from graceful_arbiter import settings as _settings  # noqa: F401  (registers the settings)
from graceful_arbiter.client import master_socket_path

GENERATION_ENV = "GRACEFUL_GUNICORN_GENERATION"
POLL_INTERVAL = 0.1  # main loop wake-up while workers boot or retire (boot timeouts, exits)
WATCH_INTERVAL = 2.0  # memory ceiling and watched files

# Modules worker classes import lazily in each worker; preloaded with `worker_preimport = ["auto"]`.
LAZY_IMPORTS = {
    "uvicorn": (
        "uvloop",
        "httptools",
        "uvicorn.loops.auto",
        "uvicorn.loops.uvloop",
        "uvicorn.loops.asyncio",
        "uvicorn.protocols.http.auto",
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.protocols.http.h11_impl",
        "uvicorn.protocols.websockets.auto",
        "uvicorn.lifespan.on",
        "uvicorn.middleware.proxy_headers",
    ),
    "gunicorn.workers.gasgi": (
        "asyncio",
        "gunicorn.asgi.protocol",
        "gunicorn.asgi.lifespan",
        "gunicorn.asgi.parser",
    ),
    "gunicorn.workers.gthread": ("concurrent.futures.thread",),
}


def reexec_command(argv: list[str], executable: str) -> tuple[str, list[str]]:
    """The interpreter and argv a USR2 re-exec runs, given this master's argv and sys.executable.

    A console script started as `<venv>/bin/graceful-gunicorn` runs under the interpreter its
    shebang names, written when the release was installed (`releases/1.0.0/venv/bin/python3`).
    Re-executing that interpreter would import the old release's packages even after `current`
    moved on. The `python` beside the script, reached through the path the script was started by,
    follows the link instead.
    """
    script = argv[0] if argv else ""
    if os.path.isabs(script) and os.path.basename(os.path.dirname(script)) == "bin":
        sibling = os.path.join(os.path.dirname(script), "python")
        if os.access(sibling, os.X_OK):
            return sibling, [sibling, *argv]
    return executable, [executable, *argv]


@dataclasses.dataclass
class Refresh:
    id: int
    trigger: str
    targets: frozenset
    started: float  # monotonic
    started_at: float  # wall clock
    request_id: int = 0
    outcome: str = "running"
    error: str | None = None
    finished_at: float | None = None
    replaced: int = 0

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "trigger": self.trigger,
            "request_id": self.request_id,
            "targets": len(self.targets),
            "replaced": self.replaced,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "error": self.error,
        }


def _replace_environ(saved: dict) -> None:
    for key in set(os.environ) - set(saved):
        os.environ.pop(key, None)
    os.environ.update(saved)


def file_signature(path: str):
    """What changes when a watched path is replaced or rewritten (None when it does not exist)."""
    signature = []
    for stat in (os.lstat, os.stat):
        try:
            st = stat(path)
            signature.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


def exit_without_teardown(code) -> None:
    """End a worker process the way SystemExit(code) would, minus the interpreter's teardown.

    The teardown clears every module, which writes to the reference count of every object, the
    ones shared with the master included: a retiring worker would copy most of the pages it
    shares, costing CPU and memory at the moment its replacements boot. Non-daemon threads are
    joined and atexit handlers (logging's flush among them) run, as at an ordinary exit.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    try:
        # As the interpreter's exit does first: join non-daemon threads (executors included).
        join_threads = getattr(threading, "_shutdown", None)
        if join_threads is not None:
            join_threads()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def describe_exit(status: int) -> tuple[int | None, str]:
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        meaning = {3: " (worker failed to boot)", 4: " (app failed to load)"}.get(code, "")
        return code, f"exited with code {code}{meaning}"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return None, f"killed by {name}"
    return None, f"ended with status {status}"


def describe_worker_exit(status: int, stop_requested: bool, killed_by_master: bool) -> tuple[str, str]:
    """(log level, text) of a worker's end, as the master logs it.

    A worker told to stop that ends on the SIGTERM it was sent (uvicorn re-raises it) has done as
    asked: info, in words that do not read like a crash. A SIGKILL from the master (graceful_timeout
    passed, or a boot that failed) is a warning.
    """
    code, how = describe_exit(status)
    if killed_by_master:
        return "warning", f"{how} (sent by the master)"
    if stop_requested and os.WIFSIGNALED(status):
        if os.WTERMSIG(status) == signal.SIGTERM:
            return "info", "stopped on the SIGTERM it was sent"
        return "warning", how  # it crashed on its way out
    return ("info" if stop_requested or code == 0 else "error"), how


class GracefulArbiter(Arbiter):
    """The master process. Behaviour beyond stock gunicorn is added handler by handler."""

    def __init__(self, app):
        # State first: Arbiter.__init__ calls setup(), which this class extends.
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        readiness.REPORT_FD = self._ready_w
        self._ready_drained = threading.Event()
        self._refresh: Refresh | None = None
        self._last_refresh: Refresh | None = None
        self._refresh_seq = 0
        self._pending: tuple | None = None  # (trigger, request_id) of an explicit refresh
        self._control_requests: deque = deque()  # filled by the control socket thread
        self._request_ids = itertools.count(1)  # control threads take ids concurrently
        self._refresh_failures = 0
        self._refresh_not_before = 0.0
        self._respawn_failures = 0
        self._respawn_not_before = 0.0
        self._next_periodic: float | None = None
        self._next_watch = 0.0
        self._watched: dict = {}
        self._first_generation_ready = False
        self._stopping = False
        self._winched = False
        self._last_boot_failure: dict | None = None
        self._last_reload: dict | None = None
        self._last_upgrade: dict | None = None
        self._reexec_started_at: float | None = None
        self._control_socket_path: str | None = None
        self._status: dict = {}
        self._environment: dict | None = None  # the last read of the environment file (no values)
        self._binds_incomplete = False  # a HUP's added address could not be bound: the next HUP tries again
        self._warmed_up = False
        self.generation = int(os.environ.get(GENERATION_ENV, "1") or 1)
        super().__init__(app)
        # USR2 re-executes through the venv path the unit named (a `current` symlink), not the
        # release a console script's shebang resolved to, so that an upgrade runs the new release.
        self.START_CTX[0], self.START_CTX["args"] = reexec_command(sys.argv, sys.executable)

    # --- configuration --------------------------------------------------------------------

    def setup(self, app):
        super().setup(app)
        # Every worker reports readiness through the pipe; see readiness.py.
        self.worker_class = readiness.with_readiness(self.worker_class)
        if self.cfg.preload_app:
            self._preimport()
            if self.cfg.worker_preload_warmup:
                self._warm_up()
        self._watched = {path: file_signature(path) for path in self.cfg.worker_refresh_on_change}
        self._next_periodic = None  # rescheduled from the (possibly new) interval

    def _preimport(self):
        names = []
        for name in self.cfg.worker_preimport:
            if name == "auto":
                for base in self.worker_class.__mro__:
                    for prefix, modules in LAZY_IMPORTS.items():
                        if (base.__module__ or "").startswith(prefix):
                            names.extend(modules)
            else:
                names.append(name)
        for name in dict.fromkeys(names):
            try:
                importlib.import_module(name)
            except Exception as exc:  # an optional speed-up must not stop the master
                self.log.debug("worker_preimport: %s not imported: %s", name, exc)

    def _warm_up(self):
        """Call the preloaded app once on the health path, so that workers share what it builds.

        Once per master: with preload a HUP reloads no code. The call runs in a thread so that an
        app that hangs costs the master `worker_boot_timeout` seconds, not its start.
        """
        if self._warmed_up:
            return
        self._warmed_up = True
        path, host, timeout = self.cfg.worker_health_path, self.cfg.worker_health_host, self.cfg.worker_boot_timeout
        if not path:
            self.log.warning("worker_preload_warmup needs worker_health_path; no warm-up")
            return
        app, asgi = self.app.wsgi(), readiness.is_asgi_worker(self.worker_class)
        outcome = [False, f"no answer within worker_boot_timeout ({timeout:g}s)"]

        def call():
            try:
                if asgi:
                    outcome[:] = asyncio.run(readiness.call_asgi(app, path, host, None, timeout))
                else:
                    outcome[:] = readiness.call_wsgi(app, path, host)
            except Exception as exc:  # the workers' own health calls decide; this is an optimisation
                outcome[:] = [False, repr(exc)]

        caller = threading.Thread(target=call, name="graceful-warm-up", daemon=True)
        caller.start()
        caller.join(timeout or None)
        ok, detail = outcome
        (self.log.info if ok else self.log.warning)("Warm-up in the master: %s", detail)

    def _limits(self) -> policy.Limits:
        return policy.Limits(
            num_workers=self.num_workers,
            batch_size=self.cfg.worker_refresh_batch_size,
            boot_timeout=self.cfg.worker_boot_timeout,
            graceful_timeout=self.cfg.graceful_timeout,
        )

    # --- the loop -------------------------------------------------------------------------

    def start(self):
        super().start()
        self._log_startup_environment()
        threading.Thread(target=self._wake_on_ready_reports, name="graceful-ready-reports", daemon=True).start()

    def _wake_on_ready_reports(self):
        """Wake the main loop as soon as a worker reports, rather than at its next poll.

        Each replacement in a refresh waits for one report, so waiting for the poll would add up
        to POLL_INTERVAL per worker. The loop reads the pipe itself (`_read_ready_reports`) and
        sets `_ready_drained`; until then this thread does not look again, or it would spin.
        """
        while True:
            try:
                select.select([self._ready_r], [], [])
            except OSError:
                return  # the pipe is closed: the master is going away
            self._ready_drained.clear()
            self.wakeup()
            self._ready_drained.wait(POLL_INTERVAL)

    def wait_for_signals(self, timeout=1.0):
        # Boot timeouts and retirements are watched by the loop: poll often while they matter.
        if self._busy():
            timeout = min(timeout, POLL_INTERVAL)
        return super().wait_for_signals(timeout=timeout)

    def _busy(self) -> bool:
        return bool(
            self._refresh
            or self._pending
            or self._control_requests
            or any(not w.graceful_ready or w.graceful_retiring_since is not None for w in self.WORKERS.values())
        )

    def manage_workers(self):
        now = time.monotonic()
        self._read_ready_reports(now)
        self._fail_overdue_boots(now)
        self._take_control_requests()
        self._watch(now)
        self._maybe_start_refresh(now)
        decision = policy.decide(
            self._views(),
            self._limits(),
            now,
            refresh=policy.RefreshView(self._refresh.targets) if self._refresh else None,
            spawn_allowed=now >= self._respawn_not_before,
        )
        self._apply(decision, now)
        self._publish_status()

    def _views(self) -> list:
        return [
            policy.WorkerView(
                pid=pid,
                age=w.age,
                born=w.graceful_born,
                ready=w.graceful_ready,
                ready_since=w.graceful_ready_since,
                retiring_since=w.graceful_retiring_since,
                killed=w.graceful_killed,
            )
            for pid, w in self.WORKERS.items()
        ]

    def _apply(self, decision: policy.Decision, now: float):
        for pid in decision.kill:
            self.log.warning("Worker (pid:%s) still running %ss after SIGTERM: SIGKILL", pid, self.cfg.graceful_timeout)
            self._kill(pid)
        for pid in decision.retire:
            self._retire(pid, now)
        if decision.finished and self._refresh:
            self._finish_refresh("succeeded")
        for _spawn in range(decision.spawn):
            self.spawn_worker()
        if not self._first_generation_ready and self.num_workers > 0:
            serving = [w for w in self.WORKERS.values() if w.graceful_retiring_since is None]
            if len(serving) >= self.num_workers and all(w.graceful_ready for w in serving):
                self._first_generation_ready = True
                self.log.info("All %s workers ready", len(serving))

    def _retire(self, pid: int, now: float):
        worker = self.WORKERS.get(pid)
        if worker is None or worker.graceful_retiring_since is not None:
            return
        worker.graceful_retiring_since = now
        if self._refresh and pid in self._refresh.targets:
            self._refresh.replaced += 1
        self.kill_worker(pid, signal.SIGTERM)

    def _kill(self, pid: int):
        worker = self.WORKERS.get(pid)
        if worker is None:
            return
        worker.graceful_killed = True
        if worker.graceful_retiring_since is None:
            worker.graceful_retiring_since = time.monotonic()
        self.kill_worker(pid, signal.SIGKILL)

    # --- workers --------------------------------------------------------------------------

    def spawn_worker(self):
        if self.cfg.preload_app and self.cfg.worker_gc_freeze:
            # Objects the master created stay out of the workers' collections, so their pages
            # stay shared instead of being written to by the first collection in each worker.
            gc.freeze()
        master = os.getpid()
        try:
            pid = super().spawn_worker()  # only the master returns from here
        except SystemExit as exc:
            if os.getpid() != master and self.cfg.preload_app and self.cfg.worker_gc_freeze:
                exit_without_teardown(exc.code)
            raise
        worker = self.WORKERS[pid]
        worker.graceful_born = time.monotonic()
        worker.graceful_born_at = time.time()
        worker.graceful_ready = False
        worker.graceful_ready_since = None
        worker.graceful_retiring_since = None
        worker.graceful_killed = False
        worker.graceful_failure = None
        worker.graceful_failure_handled = False
        worker.graceful_refresh_id = self._refresh.id if self._refresh else 0
        return pid

    def _read_ready_reports(self, now: float):
        data = b""
        while True:
            try:
                chunk = os.read(self._ready_r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        self._ready_drained.set()
        for pid, ok, detail in readiness.parse_reports(data):
            worker = self.WORKERS.get(pid)
            if worker is None:
                continue
            if ok:
                worker.graceful_ready = True
                worker.graceful_ready_since = now
                self._respawn_failures = 0
                self.log.info("Worker (pid:%s) ready after %.2fs: %s", pid, now - worker.graceful_born, detail)
            else:
                self.log.error("Worker (pid:%s) not ready: %s", pid, detail)
                self._boot_failed(worker, f"not ready: {detail}", None)

    def _fail_overdue_boots(self, now: float):
        for pid in policy.overdue_boots(self._views(), self.cfg.worker_boot_timeout, now):
            reason = f"not ready within worker_boot_timeout ({self.cfg.worker_boot_timeout:g}s)"
            self.log.error("Worker (pid:%s) %s: SIGKILL", pid, reason)
            self._boot_failed(self.WORKERS[pid], reason, None)

    def reap_workers(self):
        # gunicorn's reap_workers halts the master on exit code 3 or 4 from any worker. Here that
        # happens only before the first generation was ready (see _boot_failed).
        # A worker writes why it is not ready before it exits: read that first.
        self._read_ready_reports(time.monotonic())
        try:
            while True:
                wpid, status = os.waitpid(-1, os.WNOHANG)
                if not wpid:
                    break
                if wpid == self.reexec_pid:
                    self._reexec_child_exited(status)
                    continue
                if wpid == self.dirty_arbiter_pid and hasattr(self, "handle_dirty_arbiter_exit"):
                    self.handle_dirty_arbiter_exit(wpid, status)
                    continue
                worker = self.WORKERS.pop(wpid, None)
                if worker is None:
                    continue  # an orphan reparented to us (gunicorn as PID 1)
                code, how = describe_exit(status)
                expected = worker.graceful_retiring_since is not None or self._stopping
                level, text = describe_worker_exit(status, expected, worker.graceful_killed)
                getattr(self.log, level)("Worker (pid:%s) %s", wpid, text)
                worker.tmp.close()
                self.cfg.child_exit(self, worker)
                if not worker.graceful_ready and not expected and not self._stopping:
                    self._boot_failed(worker, worker.graceful_failure or how, code)
        except ChildProcessError:
            pass

    def _boot_failed(self, worker, reason: str, exit_code: int | None):
        """A new worker will never be ready: decide between halting, aborting and backing off."""
        if worker.graceful_failure_handled or self._stopping:
            return
        worker.graceful_failure_handled = True
        worker.graceful_failure = reason
        now = time.monotonic()
        in_refresh = bool(self._refresh and worker.pid not in self._refresh.targets)
        outcome = policy.boot_failure_outcome(self._first_generation_ready, in_refresh, exit_code)
        self._last_boot_failure = {"pid": worker.pid, "reason": reason, "at": time.time(), "outcome": outcome}
        if worker.pid in self.WORKERS:
            self._kill(worker.pid)
        if outcome == policy.HALT:
            raise HaltServer(f"Worker failed to boot: {reason}", exit_code or self.WORKER_BOOT_ERROR)
        if outcome == policy.ABORT_REFRESH:
            self._finish_refresh("failed", f"new worker (pid:{worker.pid}) {reason}")
        else:
            self._respawn_failures += 1
            delay = policy.backoff_delay(self._respawn_failures, self.cfg.worker_refresh_backoff)
            self._respawn_not_before = now + delay
            self.log.error("Worker (pid:%s) failed to boot: %s; next spawn in %.0fs", worker.pid, reason, delay)

    # --- refresh --------------------------------------------------------------------------

    def request_refresh(self, trigger: str, request_id: int = 0):
        """Explicit refresh (HUP, control command, watched file): starts as soon as the fleet is settled."""
        self._pending = (trigger, request_id)
        self.wakeup()

    def _take_control_requests(self):
        while self._control_requests:
            command, request_id = self._control_requests.popleft()
            if command == "refresh":
                self.request_refresh("manual", request_id)

    def _watch(self, now: float):
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_INTERVAL
        for path, seen in self._watched.items():
            current = file_signature(path)
            if current != seen:
                self._watched[path] = current
                self.log.info("%s changed: refreshing workers", path)
                self.request_refresh("change")
        if self.cfg.worker_max_memory and not self._refresh and now >= self._refresh_not_before:
            metric = self.cfg.worker_max_memory_metric
            usage = {
                pid: memory.read_usage(pid)[metric]
                for pid, w in self.WORKERS.items()
                if w.graceful_ready and w.graceful_retiring_since is None
            }
            over = policy.over_memory(usage, self.cfg.worker_max_memory)
            if over:
                self.log.warning("Workers above worker_max_memory (%s): %s", metric, over)
                self._start_refresh("memory", targets=over)

    def _maybe_start_refresh(self, now: float):
        if self._refresh or self._stopping or self.num_workers <= 0:
            return
        if self._pending:
            trigger, request_id = self._pending
            if self._start_refresh(trigger, request_id=request_id):
                self._pending = None
            return
        if self._next_periodic is None:
            delay = policy.periodic_delay(self.cfg.worker_refresh_interval, self.cfg.worker_refresh_jitter)
            self._next_periodic = None if delay is None else now + delay
        due = self._next_periodic is not None and now >= max(self._next_periodic, self._refresh_not_before)
        if due and self._start_refresh("periodic"):
            self._next_periodic = None

    def _start_refresh(self, trigger: str, targets=None, request_id: int = 0) -> bool:
        views = self._views()
        if not policy.can_start_refresh(views, self.num_workers, time.monotonic()):
            return False
        pids = frozenset(targets if targets is not None else (v.pid for v in views if v.serving))
        if not pids:
            return False
        self._refresh_seq += 1
        self._refresh = Refresh(
            id=self._refresh_seq,
            trigger=trigger,
            targets=pids,
            started=time.monotonic(),
            started_at=time.time(),
            request_id=request_id,
        )
        self.log.info("Refresh %s (%s): replacing %s workers", self._refresh.id, trigger, len(pids))
        return True

    def _finish_refresh(self, outcome: str, error: str | None = None):
        refresh, self._refresh = self._refresh, None
        if refresh is None:
            return
        refresh.outcome = outcome
        refresh.error = error
        refresh.finished_at = time.time()
        self._last_refresh = refresh
        self._next_periodic = None
        if outcome == "succeeded":
            self._refresh_failures = 0
            self._refresh_not_before = 0.0
            self.log.info(
                "Refresh %s (%s) succeeded: %s workers replaced", refresh.id, refresh.trigger, refresh.replaced
            )
            return
        # The new workers still booting go; the old ones keep serving.
        for pid, w in list(self.WORKERS.items()):
            if pid not in refresh.targets and not w.graceful_ready and w.graceful_retiring_since is None:
                w.graceful_failure_handled = True
                self._kill(pid)
        self._refresh_failures += 1
        delay = policy.backoff_delay(self._refresh_failures, self.cfg.worker_refresh_backoff)
        self._refresh_not_before = time.monotonic() + delay
        self.log.error(
            "Refresh %s (%s) %s: %s; old workers keep serving; automatic retry in %.0fs",
            refresh.id,
            refresh.trigger,
            outcome,
            error,
            delay,
        )

    # --- signals --------------------------------------------------------------------------

    def handle_winch(self):
        # gunicorn only honours WINCH when daemonized; under systemd it is how an old master of a
        # USR2 upgrade is drained while the new one serves.
        self.log.info("Graceful stop of workers")
        self._winched = True
        if self._refresh:
            self._finish_refresh("aborted", "WINCH")
        self._pending = None
        self.num_workers = 0
        self.manage_workers()

    def reload(self):
        if hasattr(self, "_stats"):
            self._stats["reloads"] = self._stats.get("reloads", 0) + 1
        try:
            self._reload_configuration()
        except (Exception, SystemExit) as exc:
            # gunicorn exits on a broken config file; a running service keeps its configuration.
            self.log.error("Reload failed, configuration unchanged: %r", exc)
            self._last_reload = {"at": time.time(), "outcome": "failed", "error": repr(exc)}
            return
        self._last_reload = {"at": time.time(), "outcome": "succeeded", "error": None}
        self._winched = False
        self.request_refresh("hup")

    def _reload_configuration(self):
        old_cfg, old_address = self.app.cfg, self.cfg.address
        saved_environ, environment_before = dict(os.environ), self._environment
        for key in self.cfg.env:  # undo the env the old configuration set
            if key in self.cfg.env_orig:
                os.environ[key] = self.cfg.env_orig[key]
            else:
                os.environ.pop(key, None)
        # Before the new Config copies os.environ (its env_orig is what a later USR2 passes on) and
        # before raw_env is applied on top, as systemd's EnvironmentFile= comes before it at start.
        self._reload_environment_file()
        try:
            self.app.reload()
        except BaseException:
            self.app.cfg = old_cfg
            _replace_environ(saved_environ)
            if self._environment is not environment_before and self._environment["outcome"] == "applied":
                self._environment = dict(
                    self._environment,
                    outcome="not applied",
                    error="the configuration did not reload; the environment stays as it was",
                )
            raise
        self.setup(self.app)
        self.log.reopen_files()
        if old_address != self.cfg.address or self._binds_incomplete:
            self._update_listeners()
        self.cfg.on_reload(self)

    def _log_startup_environment(self):
        if envfile.STARTUP:
            self._note_environment(envfile.STARTUP)

    def _reload_environment_file(self):
        """Apply the instance's environment file again (HUP); a bad file leaves the environment."""
        try:
            loaded = envfile.reload_from_environment()
        except envfile.EnvFileError as exc:
            self.log.error("Environment file not applied, the environment stays as it was: %s", exc)
            self._environment = dict(self._environment or {}, outcome="failed", error=str(exc), at=time.time())
            return
        if loaded is not None:
            self._note_environment(loaded)

    def _note_environment(self, loaded: tuple):
        path, names, removed = loaded  # names only: values are never logged
        self._environment = {"file": path, "names": len(names), "outcome": "applied", "error": None, "at": time.time()}
        self.log.info(
            "Environment file %s applied: %s names%s",
            path,
            len(names),
            f"; removed {', '.join(removed)}" if removed else "",
        )

    def _update_listeners(self):
        """A changed `bind` at HUP: keep the listeners whose address stays, bind the new ones first,
        then close the ones no longer configured.

        Closing every listener and binding again, as gunicorn does, fails on an address that stays:
        the old workers, still serving until the new ones are ready, hold it. When an added address
        cannot be bound, nothing is closed. Under socket activation the sockets belong to systemd's
        socket units: nothing is bound or closed here.
        """
        if self.systemd:
            self.log.info("bind changed: listeners unchanged, under socket activation binds come from the socket units")
            return
        plan, removed = listeners.plan(self.cfg.address, self.LISTENERS)
        updated, added, failed = [], 0, 0
        for address, listener in plan:
            if listener is None:
                try:
                    listener = listeners.bind(address, self.cfg, self.log)
                except (Exception, SystemExit) as exc:
                    failed += 1
                    self.log.error("Could not listen at %s: %s", listeners.describe(address), exc)
                    continue
                added += 1
            updated.append(listener)
        self._binds_incomplete = bool(failed)
        if failed:
            self.log.error("bind: %s new addresses not bound (tried again at the next HUP); no listener closed", failed)
            removed = []
            updated += [lnr for lnr in self.LISTENERS if lnr not in updated]
        self.LISTENERS = updated
        # Another master of a USR2 upgrade shares these sockets: leave their paths alone then.
        self._close_listeners(removed, unlink=self.reexec_pid == self.master_pid == 0 and not self.cfg.reuse_port)
        self.log.info(
            "Listening at: %s (added %s, closed %s)",
            ",".join(str(lnr) for lnr in self.LISTENERS),
            added,
            len(removed),
        )

    def _close_listeners(self, closing: list, unlink: bool):
        """gunicorn's close_sockets, except that a unix socket file already gone (or never on the
        file system) does not stop the others from closing."""
        for listener in closing:
            name = listener.getsockname()
            listener.close()
            if unlink and isinstance(name, str) and name and not name.startswith("\0"):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self.log.warning("Could not remove the socket file %s: %s", name, exc)

    def reexec(self):
        if self.reexec_pid or self.master_pid:
            return super().reexec()  # logs why USR2 is ignored
        parent = os.getpid()
        previous = self.cfg.env_orig.get(GENERATION_ENV)
        self.cfg.env_orig[GENERATION_ENV] = str(self.generation + 1)
        try:
            self._fork_and_exec()
        except BaseException as exc:
            if os.getpid() != parent:
                # The forked child inherited this master's workers and listeners: leaving through
                # the arbiter's exception path would stop them. Only the child goes.
                try:
                    self.log.error("USR2: the new master failed before exec: %r; this master keeps serving", exc)
                finally:
                    os._exit(self.WORKER_BOOT_ERROR)
            raise
        finally:
            if os.getpid() == parent:
                if previous is None:
                    self.cfg.env_orig.pop(GENERATION_ENV, None)
                else:
                    self.cfg.env_orig[GENERATION_ENV] = previous
        if self.reexec_pid:
            self._reexec_started_at = time.time()
            self.log.info("USR2: new master forked (pid:%s)", self.reexec_pid)

    def _fork_and_exec(self):
        """gunicorn's reexec, with the listeners where the new master looks for them.

        Under socket activation the new master takes fds 3..n+2 (LISTEN_FDS=n, LISTEN_PID its
        own PID, which the exec keeps). gunicorn duplicates an inherited fd to another number when
        it wraps it in a socket object, so the child first moves every listener back there.
        """
        master_pid = os.getpid()
        self.reexec_pid = os.fork()
        if self.reexec_pid != 0:
            return
        self.cfg.pre_exec(self)
        environ = self.cfg.env_orig.copy()
        environ["GUNICORN_PID"] = str(master_pid)
        for name in ("GUNICORN_FD", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            environ.pop(name, None)
        fds = [lnr.fileno() for lnr in self.LISTENERS]
        if self.systemd:
            listeners.place_listen_fds(fds)
            environ["LISTEN_PID"] = str(os.getpid())
            environ["LISTEN_FDS"] = str(len(fds))
        else:
            environ["GUNICORN_FD"] = ",".join(str(fd) for fd in fds)
        os.chdir(self.START_CTX["cwd"])
        os.execvpe(self.START_CTX[0], self.START_CTX["args"], environ)

    def _reexec_child_exited(self, status: int):
        _code, how = describe_exit(status)
        self.log.error("New master (pid:%s) %s; this master keeps serving", self.reexec_pid, how)
        self._last_upgrade = {"pid": self.reexec_pid, "outcome": "failed", "error": how, "at": time.time()}
        self.reexec_pid = 0

    def maybe_promote_master(self):
        was_child = self.master_pid != 0
        super().maybe_promote_master()
        if was_child and self.master_pid == 0:
            self.generation_promoted_at = time.time()
            self._claim_control_link()

    def stop(self, graceful=True):
        """TERM (systemctl stop or restart): stop accepting, then retire the workers drained.

        The master closes its own copies of the listeners first (under socket activation systemd
        keeps the sockets, and new connections queue for the next master). Each worker gets one
        SIGTERM, as a refresh or WINCH retires it: its drain answers kept-alive clients with
        `Connection: close` instead of closing under them. A worker already retiring is left to
        finish its drain: a second SIGTERM would cut it short. QUIT and INT stay gunicorn's fast
        stop.
        """
        self._stopping = True
        if not graceful:
            super().stop(False)
            return
        unlink = self.reexec_pid == self.master_pid == 0 and not self.systemd and not self.cfg.reuse_port
        closing, self.LISTENERS = self.LISTENERS, []
        self._close_listeners(closing, unlink)
        if self.WORKERS:
            self.log.info(
                "Stopping: not accepting any more%s; draining %s workers",
                " (the socket units keep listening)" if self.systemd else "",
                len(self.WORKERS),
            )
        if self._dirty_pid():
            self.kill_dirty_arbiter(signal.SIGTERM)
        now = time.monotonic()
        for pid in list(self.WORKERS):
            self._retire(pid, now)
        limit = time.monotonic() + self.cfg.graceful_timeout
        quick = False
        while (self.WORKERS or self._dirty_pid()) and time.monotonic() < limit:
            if not quick and self._quick_stop_requested():
                quick = True
                self.log.info("Quick shutdown requested")
                self.kill_workers(signal.SIGQUIT)
                if self._dirty_pid():
                    self.kill_dirty_arbiter(signal.SIGQUIT)
                limit = min(limit, time.monotonic() + 2.0)
            self._reap_all()
            time.sleep(0.1)
        self.kill_workers(signal.SIGKILL)
        if self._dirty_pid():
            self.kill_dirty_arbiter(signal.SIGKILL)
        self._reap_all()

    def _dirty_pid(self) -> int:
        return getattr(self, "dirty_arbiter_pid", 0) or 0

    def _reap_all(self):
        self.reap_workers()
        if hasattr(self, "reap_dirty_arbiter"):
            self.reap_dirty_arbiter()

    def _quick_stop_requested(self) -> bool:
        """Whether INT or QUIT arrived during a graceful stop (other signals wait, as in gunicorn)."""
        try:
            sig = self.SIG_QUEUE.get_nowait()
        except queue.Empty:
            return False
        return sig in (signal.SIGINT, signal.SIGQUIT)

    def halt(self, reason=None, exit_status=0):
        self._hand_over_pidfile()
        self._release_control_link()
        super().halt(reason, exit_status)

    def _hand_over_pidfile(self):
        """Before an old master leaves its re-executed child behind, name the child in the pidfile.

        systemd reads the unit's PIDFile= when its main process exits; finding the new master
        there, it keeps the service active and follows it. gunicorn's Pidfile.unlink() then
        leaves the file alone (it holds another PID), and the new master's own rename of
        <pidfile>.2 on promotion writes the same PID again.
        """
        child, path = self.reexec_pid, self.cfg.pidfile
        if not child or not path or self.master_pid:
            return
        try:
            os.kill(child, 0)
        except OSError:
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{child}\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            self.log.info("Handed the pidfile %s over to the new master (pid:%s)", path, child)
        except OSError as exc:
            self.log.error("Could not hand the pidfile over to pid %s: %s", child, exc)

    # --- control socket and status --------------------------------------------------------

    def _start_control_server(self):
        if self.cfg.control_socket_disable:
            return
        from graceful_arbiter.control import GracefulControlServer

        path = master_socket_path(self._get_control_socket_path(), self.pid)
        try:
            self._control_server = GracefulControlServer(self, path, self.cfg.control_socket_mode)
            self._control_server.start()
        except Exception as exc:
            self.log.warning("Failed to start control socket: %s", exc)
            self._control_server = None
            return
        self._control_socket_path = path
        if not self.master_pid:
            self._claim_control_link()

    def _claim_control_link(self):
        """Point the configured control_socket path at this master's socket (gunicornc works)."""
        if not self._control_socket_path:
            return
        link = self._get_control_socket_path()
        tmp = f"{link}.{self.pid}.link"
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(os.path.basename(self._control_socket_path), tmp)
            os.replace(tmp, link)
        except OSError as exc:
            self.log.debug("control socket link %s not updated: %s", link, exc)

    def _release_control_link(self):
        if not self._control_socket_path:
            return
        link = self._get_control_socket_path()
        try:
            if os.readlink(link) == os.path.basename(self._control_socket_path):
                os.unlink(link)
        except OSError:
            pass

    def control_command(self, args: list) -> dict:
        """`graceful ...` commands; run on control client threads, so they only read snapshots."""
        command = args[0].lower() if args else "status"
        if command == "status":
            options = [arg.lower() for arg in args[1:]]
            if options not in ([], ["brief"]):
                raise ValueError(f"graceful status takes no argument or 'brief', not {' '.join(args[1:])!r}")
            return self._status_with_ages() if options else self._status_with_memory()
        if command == "refresh":
            request_id = next(self._request_ids)
            self._control_requests.append(("refresh", request_id))
            self.wakeup()
            refresh = self._status.get("refresh", {})
            return {"accepted": True, "request_id": request_id, "in_progress": refresh.get("in_progress")}
        if command == "help":
            return {"commands": ["graceful status", "graceful status brief", "graceful refresh", "graceful help"]}
        raise ValueError(f"Unknown graceful command: {command}")

    def _publish_status(self):
        now, wall = time.monotonic(), time.time()
        workers = []
        for pid, w in sorted(self.WORKERS.items(), key=lambda item: item[1].age):
            state = "retiring" if w.graceful_retiring_since is not None else "ready" if w.graceful_ready else "booting"
            workers.append(
                {
                    "pid": pid,
                    "age": w.age,
                    "born_at": w.graceful_born_at,
                    "state": state,
                    "ready": w.graceful_ready,
                    "refresh_id": w.graceful_refresh_id,
                }
            )
        preload = bool(self.cfg.preload_app)
        self._status = {
            "arbiter_version": __version__,
            "master": {
                "pid": self.pid,
                "generation": self.generation,
                "name": self.master_name,
                "parent_pid": self.master_pid,
                "reexec_pid": self.reexec_pid,
                "started_at": self._stats.get("start_time") if hasattr(self, "_stats") else None,
                "pidfile": self.pidfile.fname if self.pidfile else None,
                "control_socket": self._control_socket_path,
                "winched": self._winched,
                "stopping": self._stopping,
                "last_upgrade": self._last_upgrade,
            },
            "config": {
                "workers": self.num_workers,
                "worker_class": self.cfg.worker_class_str,
                "preload_app": preload,
                "hup_reloads_code": not preload,
                "worker_refresh_interval": self.cfg.worker_refresh_interval,
                "worker_refresh_batch_size": self.cfg.worker_refresh_batch_size,
                "worker_boot_timeout": self.cfg.worker_boot_timeout,
                "worker_health_path": self.cfg.worker_health_path,
                "worker_max_memory": self.cfg.worker_max_memory,
                "worker_max_memory_metric": self.cfg.worker_max_memory_metric,
                "graceful_timeout": self.cfg.graceful_timeout,
            },
            "workers": workers,
            "ready_workers": sum(1 for w in workers if w["state"] == "ready"),
            "refresh": {
                "in_progress": self._refresh is not None,
                "current": self._refresh.as_dict() if self._refresh else None,
                "last": self._last_refresh.as_dict() if self._last_refresh else None,
                "pending": self._pending[0] if self._pending else None,
                "consecutive_failures": self._refresh_failures,
                "retry_in": max(0.0, round(self._refresh_not_before - now, 1)),
                "next_periodic_in": None if self._next_periodic is None else round(self._next_periodic - now, 1),
                "last_request_id": max(
                    [r.request_id for r in (self._refresh, self._last_refresh) if r] or [0],
                ),
            },
            "last_boot_failure": self._last_boot_failure,
            "last_reload": self._last_reload,
            "environment_file": self._environment,
            "published_at": wall,
        }

    def _status_with_ages(self) -> dict:
        status = dict(self._status)
        now = time.time()
        status["workers"] = [
            dict(worker, age_seconds=round(now - worker["born_at"], 1)) for worker in status.get("workers", [])
        ]
        return status

    def _status_with_memory(self) -> dict:
        status = self._status_with_ages()
        status["workers"] = [dict(worker, **memory.read_usage(worker["pid"])) for worker in status["workers"]]
        status["master"] = dict(status.get("master", {}), **memory.read_usage(os.getpid()))
        return status
