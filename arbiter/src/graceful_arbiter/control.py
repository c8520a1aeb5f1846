"""gunicorn's control socket, extended with the `graceful` commands, served without stopping at forks.

Commands are gunicorn's (`show workers`, `worker add 1`, `reload`...) plus:
  graceful status          the master's state with each process's memory, see README.md
  graceful status brief    the same without memory (cheap enough to poll during a refresh)
  graceful refresh         ask for a rolling refresh; returns {"accepted": true, "request_id": N}
  graceful help

The wire format is gunicorn's (a 4-byte big-endian length, then JSON). gunicorn 27 serves it from
an asyncio loop in a thread that it stops before every fork and starts again after: each spawned
worker costs a thread and a loop, and a client connected at that moment waits for its timeout
without an answer, which is when a refresh is polled. Here a plain thread accepts on a blocking
socket, one thread per client: a fork needs nothing stopped, since the child runs only the forking
thread and merely closes its copies of the sockets (`_close_in_child`). What the client threads
read is the master's published snapshot, so no lock is held across a fork.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import threading
import time
import weakref

from gunicorn.ctl.protocol import ControlProtocol, ProtocolError, make_error_response, make_response
from gunicorn.ctl.server import ControlSocketServer

CLIENT_IDLE_TIMEOUT = 300.0  # as gunicorn: an idle interactive client is let go after 5 minutes
LISTEN_BACKLOG = 16
ACCEPT_RETRY_DELAY = 0.1

_servers: weakref.WeakSet = weakref.WeakSet()


def _close_in_child():
    """After a fork, in the child: the sockets are the master's, not the worker's."""
    for server in list(_servers):
        server.forget()
    _servers.clear()


os.register_at_fork(after_in_child=_close_in_child)


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

    def _execute_command(self, parts: list) -> dict:
        if parts and parts[0].lower() == "graceful":
            return self.arbiter.control_command(parts[1:])
        return super()._execute_command(parts)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self):
        if self._running:
            return
        socket_dir = os.path.dirname(self.socket_path)
        if socket_dir and not os.path.isdir(socket_dir):
            os.makedirs(socket_dir, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # a stale socket of a master with this PID before
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Bound under a umask that leaves no window in which the socket is wider than its mode.
            umask = os.umask(0o777 & ~self.socket_mode)
            try:
                listener.bind(self.socket_path)
            finally:
                os.umask(umask)
            os.chmod(self.socket_path, self.socket_mode)
            listener.listen(LISTEN_BACKLOG)
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

    def stop(self):
        if not self._running:
            return
        self._running = False
        _servers.discard(self)
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept() (Linux); close() alone would not.
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
        while self._running and listener is not None:
            try:
                client, _address = listener.accept()
            except OSError:
                if not self._running:
                    return
                time.sleep(ACCEPT_RETRY_DELAY)  # ECONNABORTED, EMFILE: keep accepting, without spinning
                continue
            with self._clients_lock:
                self._clients.add(client)
            threading.Thread(
                target=self._serve_client, args=(client,), name="graceful-control-client", daemon=True
            ).start()

    def _serve_client(self, client: socket.socket):
        client.settimeout(CLIENT_IDLE_TIMEOUT)
        try:
            while self._running:
                try:
                    message = ControlProtocol.read_message(client)
                except (ConnectionError, ProtocolError, OSError, ValueError):
                    return
                ControlProtocol.write_message(client, dispatch(message, self._execute_command, self.arbiter.log))
        except OSError:
            return
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            client.close()
