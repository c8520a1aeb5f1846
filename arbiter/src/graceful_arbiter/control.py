"""gunicorn's control socket, extended with the `graceful` commands, served without stopping at forks.

Commands are gunicorn's (`show workers`, `worker add 1`, `reload`...) plus:
  graceful status          the master's state with each process's memory, see README.md
  graceful status brief    the same without memory (cheap enough to poll during a refresh)
  graceful refresh         ask for a rolling refresh; returns {"accepted": true, "request_id": N}
  graceful help

The wire format is gunicorn's (a 4-byte big-endian length, then JSON). gunicorn 27 serves it from
an asyncio loop in a thread that it stops before every fork and starts again after: each spawned
worker costs a thread and a loop, and a client connected at that moment waits for its timeout
without an answer, which is when a refresh is polled. Here a plain thread waits for connections
with poll(), one thread per client: a fork needs nothing stopped, since the child runs only the forking
thread and merely closes its copies of the sockets (`_close_in_child`). A fork waits for the short
moment between accepting a connection and registering it, so that no worker keeps a copy the
master does not know of. The `graceful` commands read the master's published snapshot; gunicorn's
own commands run as they do under gunicorn.

Limits: at most MAX_CLIENTS connections are served at once; one more is answered with an error
reply and closed. Counts (`worker add N`, `worker remove N`, `dirty add N`, `dirty remove N`) and
the PID of `worker kill` must be plain decimal numbers within the bounds below, and `worker add`
never takes the master past MAX_WORKERS; anything else is an `Invalid argument` reply.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import socket
import tempfile
import threading
import weakref

from gunicorn.ctl.protocol import ControlProtocol, ProtocolError, make_error_response, make_response
from gunicorn.ctl.server import ControlSocketServer

CLIENT_IDLE_TIMEOUT = 300.0  # as gunicorn: an idle interactive client is let go after 5 minutes
LISTEN_BACKLOG = 16
ACCEPT_RETRY_DELAY = 0.1
STOP_CHECK_INTERVAL_MS = 1000  # how often the accept thread looks at `_running` when nothing connects
MAX_CLIENTS = 16  # connections served at once, one thread each; more are refused
MAX_COUNT_PER_COMMAND = 64  # workers (or dirty workers) one `add`/`remove` may change
MAX_WORKERS = 1024  # `worker add` never takes the master past this many workers
PID_MAX = 4194304  # the kernel's largest pid_max
_DECIMAL = re.compile(r"[1-9][0-9]{0,6}")  # with fullmatch: no sign, no spaces, no newline, no 5,000 digits

_servers: weakref.WeakSet = weakref.WeakSet()


_held_over_fork: list = []


def _hold_registrations():
    """Before a fork: no connection may be accepted and not yet registered (see `_accept_one`)."""
    for server in list(_servers):
        server._clients_lock.acquire()
        _held_over_fork.append(server._clients_lock)


def _release_registrations():
    while _held_over_fork:
        _held_over_fork.pop().release()


def _close_in_child():
    """After a fork, in the child: the sockets are the master's, not the worker's."""
    _held_over_fork.clear()  # the locks were held by the parent; forget() makes new ones
    for server in list(_servers):
        server.forget()
    _servers.clear()


os.register_at_fork(before=_hold_registrations, after_in_parent=_release_registrations, after_in_child=_close_in_child)


def _bounded_number(command: str, args: list, what: str, maximum: int, default=None) -> int:
    """The single argument of `command` as an int in 1..maximum, or ValueError naming the bounds."""
    if not args and default is not None:
        return default
    if len(args) != 1 or not _DECIMAL.fullmatch(args[0]) or int(args[0]) > maximum:
        got = " ".join(args) if args else "nothing"
        raise ValueError(f"{command} takes one {what} from 1 to {maximum}, got {got[:40]!r}")
    return int(args[0])


def check_counted_command(parts: list, current_workers: int | None) -> None:
    """Refuse a `worker`/`dirty` command whose count or PID is malformed or out of bounds.

    `current_workers` is the master's worker count, for the MAX_WORKERS bound of `worker add`.
    """
    group, action, args = parts[0].lower(), parts[1].lower() if len(parts) > 1 else "", parts[2:]
    command = f"{group} {action}"
    if action in ("add", "remove"):
        count = _bounded_number(command, args, "count", MAX_COUNT_PER_COMMAND, default=1)
        if (
            group == "worker"
            and action == "add"
            and current_workers is not None
            and current_workers + count > MAX_WORKERS
        ):
            raise ValueError(
                f"worker add {count} would make {current_workers + count} workers; "
                f"the control socket allows at most {MAX_WORKERS}"
            )
    elif group == "worker" and action == "kill":
        _bounded_number(command, args, "worker PID", PID_MAX)


def dispatch(message, execute, log=None) -> dict:
    """One request message -> its reply; `execute(parts)` runs a parsed command."""
    if not isinstance(message, dict):
        return make_error_response(0, "Empty command")
    request_id = message.get("id", 0)
    command = str(message.get("command") or "").strip()
    try:
        parts = shlex.split(command)
        parts.extend(str(arg) for arg in (message.get("args") or []))
        if not parts:
            return make_error_response(request_id, "Empty command")
        return make_response(request_id, execute(parts))
    except ValueError as exc:
        return make_error_response(request_id, f"Invalid argument: {exc}")
    except Exception as exc:  # the reply carries the error; the server keeps serving
        if log:
            log.exception("Control command %r failed", command)
        return make_error_response(request_id, f"Command failed: {exc}")


class GracefulControlServer(ControlSocketServer):
    def __init__(self, arbiter, socket_path: str, socket_mode: int = 0o600):
        super().__init__(arbiter, socket_path, socket_mode)
        self._listener: socket.socket | None = None
        self._clients: set = set()
        self._clients_lock = threading.Lock()
        self._counted_lock = threading.Lock()  # a bound checked is a bound kept: one count change at a time

    def _execute_command(self, parts: list) -> dict:
        verb = parts[0].lower() if parts else ""
        if verb == "graceful":
            return self.arbiter.control_command(parts[1:])
        if verb in ("worker", "dirty"):
            with self._counted_lock:
                check_counted_command(parts, getattr(self.arbiter, "num_workers", None))
                return super()._execute_command(parts)
        return super()._execute_command(parts)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self):
        if self._running:
            return
        socket_dir = os.path.dirname(self.socket_path)
        if socket_dir and not os.path.isdir(socket_dir):
            os.makedirs(socket_dir, mode=0o700)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind_with_mode(listener)
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)  # accepted only once poll() said so, see _accept_one
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._running = True
        _servers.add(self)
        self._thread = threading.Thread(target=self._accept_loop, name="graceful-control", daemon=True)
        self._thread.start()
        if self.arbiter.log:
            self.arbiter.log.info("Control socket listening at %s", self.socket_path)

    def _bind_with_mode(self, listener: socket.socket):
        """Bind at socket_path with socket_mode, never wider in between.

        The socket is made in a private (0700) directory beside the path, given its mode there,
        then renamed into place: no window, and no process-wide umask change under other threads.
        The rename also replaces a stale socket left by an earlier master with this PID.
        """
        staging = tempfile.mkdtemp(prefix=".ctl-", dir=os.path.dirname(self.socket_path) or ".")
        staged = os.path.join(staging, "s")
        try:
            listener.bind(staged)
            os.chmod(staged, self.socket_mode)
            os.replace(staged, self.socket_path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            os.rmdir(staging)

    def stop(self):
        if not self._running:
            return
        self._running = False
        _servers.discard(self)
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread waiting in poll() at once, not at its next check.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._clients_lock:
            clients, self._clients = self._clients, set()
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def forget(self):
        """In a forked child: close this process's copies of the sockets, touch nothing else."""
        self._running = False
        self._thread = None
        for sock in [self._listener, *self._clients]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener = None
        self._clients = set()
        self._clients_lock = threading.Lock()

    # gunicorn 27 calls these around each fork for servers in its own registry, which this one
    # never joins; they are overridden so that nothing would be stopped if it did.
    def _stop_for_fork(self):
        pass

    def _restart_after_fork(self):
        pass

    # --- serving -------------------------------------------------------------------------

    def _accept_loop(self):
        listener = self._listener
        waiting = select.poll()
        waiting.register(listener, select.POLLIN)
        while self._running:
            try:
                if not waiting.poll(STOP_CHECK_INTERVAL_MS):
                    continue
                client = self._accept_one(listener)
            except OSError:
                if not self._running:
                    return
                # ECONNABORTED, EMFILE...: keep accepting, without spinning.
                threading.Event().wait(ACCEPT_RETRY_DELAY)
                continue
            if client is not None:
                self._start_client_thread(client)

    def _accept_one(self, listener: socket.socket):
        """Accept and register under the lock the fork handlers hold: a fork sees both or neither.

        Past MAX_CLIENTS the connection is refused here, never registered nor given a thread.
        """
        with self._clients_lock:
            try:
                client, _address = listener.accept()
            except BlockingIOError:
                return None  # another wake-up took it
            admitted = len(self._clients) < MAX_CLIENTS
            if admitted:
                self._clients.add(client)
        if not admitted:
            self._refuse(client, f"too many control connections (at most {MAX_CLIENTS}), try again later")
            return None
        client.setblocking(True)
        return client

    def _refuse(self, client: socket.socket, reason: str):
        """Answer a connection that will not be served with one error reply, then close it.

        The reply is written without waiting (a new socket's buffer takes it whole), so a client
        that never reads cannot hold up the accept thread.
        """
        if self.arbiter.log:
            self.arbiter.log.warning("Control socket: connection refused: %s", reason)
        with contextlib.suppress(OSError):
            client.send(ControlProtocol.encode_message(make_error_response(0, reason)), socket.MSG_DONTWAIT)
            client.shutdown(socket.SHUT_WR)
        client.close()

    def _start_client_thread(self, client: socket.socket):
        try:
            threading.Thread(
                target=self._serve_client, args=(client,), name="graceful-control-client", daemon=True
            ).start()
        except RuntimeError as exc:  # no thread to be had (TasksMax, ulimit -u): refuse this one
            with self._clients_lock:
                self._clients.discard(client)
            self._refuse(client, f"no thread to serve this connection: {exc}")

    def _forget_client(self, client: socket.socket):
        with self._clients_lock:
            self._clients.discard(client)
        client.close()

    def _serve_client(self, client: socket.socket):
        client.settimeout(CLIENT_IDLE_TIMEOUT)
        try:
            while self._running:
                try:
                    message = ControlProtocol.read_message(client)
                except (ConnectionError, ProtocolError, OSError, ValueError):
                    return
                ControlProtocol.write_message(client, dispatch(message, self._execute_command, self.arbiter.log))
        except Exception as exc:  # a write that failed, a reply that is not JSON: end this client only
            if self.arbiter.log:
                self.arbiter.log.debug("Control client ended: %r", exc)
        finally:
            self._forget_client(client)
