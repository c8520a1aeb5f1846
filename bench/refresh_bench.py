"""Refresh benchmark: the graceful arbiter beside stock gunicorn, on loopback, bounded in time.

    .venv/bin/python bench/refresh_bench.py [--import-seconds 1] [--workers 4] [--rounds 8] [--only NAME]
        [--memory-only] [--memory-app demo|fastapi]

On the example ASGI app (graceful_demo_asgi, made to import in --import-seconds) with gunicorn's
`asgi` worker, it prints for each way of replacing all workers one by one, --rounds times after a
quiet period each: the median time it took, the p99 latency at rest and during the refreshes (of
the requests started between the refresh request and the exit of the last replaced worker) and
their ratio, and the failed requests of keep-alive clients, which run in a process of their own.
Then the total PSS (master plus workers, after some requests) of the graceful arbiter with preload,
gc.freeze and pre-imports, with and without the master's warm-up, of stock gunicorn with preload
(all with uvicorn-worker), and of `uvicorn --workers N`, on the example app or on a FastAPI app
(--memory-app fastapi, after pip install -r bench/requirements.txt). Every process it starts is
stopped by PID.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "arbiter"))

from processes import children, stop_tree, tree, tree_pss  # noqa: E402  bench/processes.py
from tests.integration.harness import Load, free_port, wait_for  # noqa: E402

from graceful_arbiter.client import master_socket_path, request  # noqa: E402

BIN = Path(sys.executable).parent
APP_DIR = ROOT / "examples/apps/asgi"
# The memory figures on the example app, or on a FastAPI app of the usual shape (pip install -r
# bench/requirements.txt): name -> (PYTHONPATH, app).
MEMORY_APPS = {
    "demo": (ROOT / "examples/apps/asgi", "graceful_demo_asgi:app"),
    "fastapi": (ROOT / "bench/apps", "bench_fastapi_app:app"),
}
REST_SECONDS = 2.0


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _load_process(port: int, clients: int, seconds: float, stop, results):
    with Load(port, threads=clients, seconds=seconds, max_requests=10**9, mode="keepalive") as load:
        stop.wait(seconds)
    results.send((load.requests, load.failures))


class KeepAliveLoad:
    """The test harness's keep-alive clients in a process of their own, so that the benchmark's
    own polling of the master does not hold their interpreter lock. Bounded by `seconds`."""

    def __init__(self, port: int, clients: int = 4, seconds: float = 120):
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._results, child_end = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_load_process, args=(port, clients, seconds, self._stop, child_end), daemon=True
        )
        self.seconds = seconds
        self.deadline = float("inf")
        self.requests: list = []
        self.failures: list = []
        self._stopped = False

    def __enter__(self):
        self.deadline = time.monotonic() + self.seconds  # the clients stop by themselves then
        self._process.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._results.poll(60):
            self.requests, self.failures = self._results.recv()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class Server:
    def __init__(self, argv: list[str], env: dict, workdir: Path, app_dir: Path = APP_DIR):
        self.port = free_port()
        self.workdir = workdir
        argv = [a.replace("{port}", str(self.port)).replace("{dir}", str(workdir)) for a in argv]
        self.log = open(workdir / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=dict(os.environ, PYTHONPATH=str(app_dir), **env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def ctl(self) -> str:
        return str(self.workdir / f"ctl-{self.port}.sock")

    def wait_serving(self, timeout: float = 60):

        def answers():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        wait_for(answers, timeout, what="server answering")

    def stop(self):
        stop_tree(self.proc)
        self.log.close()


def gunicorn_argv(
    graceful: bool, workers: int, preload: bool, worker_class: str, extra=(), app="graceful_demo_asgi:app"
) -> list[str]:
    argv = [
        str(BIN / ("graceful-gunicorn" if graceful else "gunicorn")),
        "-b",
        "127.0.0.1:{port}",
        "-w",
        str(workers),
        "-k",
        worker_class,
        "--control-socket",
        "{dir}/ctl-{port}.sock",
        "--graceful-timeout",
        "10",
        *extra,
    ]
    if preload:
        argv.append("--preload")
    if graceful:
        argv += ["--worker-health-path", "/health"]
    return [*argv, app]


def worker_pids(server: Server, graceful: bool) -> set:
    path = master_socket_path(server.ctl, server.proc.pid) if graceful else server.ctl
    return {w["pid"] for w in request(path, "show workers")["workers"]}


def measure_refresh(
    name: str, server: Server, graceful: bool, how: str, workers: int, import_seconds: float, rounds: int
) -> dict:
    """Replace every worker `rounds` times, with quiet periods in between, under keep-alive load.

    Latencies of requests that started in the quiet periods are "at rest"; those that started
    between the start of a refresh and the exit of the last worker it replaced are "during".
    """
    server.wait_serving()
    time.sleep(import_seconds + 1)  # every worker booted
    busy, seconds = [], []
    with KeepAliveLoad(server.port, clients=4, seconds=60 + 30 * rounds) as load:
        for _round in range(rounds):
            time.sleep(REST_SECONDS)
            old = worker_pids(server, graceful)
            started = time.monotonic()
            replace_workers(server, graceful, how, workers, import_seconds, old)
            seconds.append(time.monotonic() - started)
            wait_for(lambda old=old: not old & set(children(server.proc.pid)), 60, 0.05, what="old workers gone")
            busy.append((started, time.monotonic()))
        load.stop()
    if busy[-1][1] > load.deadline:
        print(f"warning: {name}: the load ended before the last refresh did", file=sys.stderr)
    during = [latency for start, latency in load.requests if any(a <= start <= b for a, b in busy)]
    rest = [latency for start, latency in load.requests if not any(a <= start <= b for a, b in busy)]
    p99_rest, p99_during = p99(rest) * 1000, p99(during) * 1000
    return {
        "name": name,
        "seconds": statistics.median(seconds),
        "p99_rest_ms": p99_rest,
        "p99_refresh_ms": p99_during,
        "ratio": p99_during / p99_rest,
        "max_refresh_ms": max(during, default=float("nan")) * 1000,
        "requests": len(load.requests) + len(load.failures),
        "failed": len(load.failures),
    }


def replace_workers(server: Server, graceful: bool, how: str, workers: int, import_seconds: float, old: set):
    if how == "graceful":
        path = master_socket_path(server.ctl, server.proc.pid)
        before = (request(path, "graceful status brief")["refresh"]["last"] or {}).get("id", 0)
        request(path, "graceful refresh")
        wait_for(
            lambda: (request(path, "graceful status brief")["refresh"]["last"] or {}).get("id", 0) > before,
            120,
            0.05,
            what="refresh finished",
        )
    elif how == "hup":
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(lambda: not worker_pids(server, graceful) & old, 120, 0.05)
        time.sleep(import_seconds)  # the new workers still import; requests queue meanwhile
    elif how == "ttin-ttou":
        for _worker in range(workers):
            count = len(worker_pids(server, graceful))
            os.kill(server.proc.pid, signal.SIGTTIN)
            wait_for(lambda c=count: len(worker_pids(server, graceful)) > c, 30, 0.05)
            time.sleep(import_seconds + 0.2)  # stock gunicorn cannot tell when the worker is ready
            os.kill(server.proc.pid, signal.SIGTTOU)
            wait_for(lambda c=count: len(worker_pids(server, graceful)) == c, 30, 0.05)


def measure_memory(name: str, server: Server, requests: int = 3000) -> dict:
    server.wait_serving()
    time.sleep(1)
    with Load(server.port, threads=4, seconds=60, max_requests=requests) as load:
        while load.total < requests and load._more():
            time.sleep(0.1)
    time.sleep(0.5)
    return {"name": name, "pss_mib": tree_pss(server.proc.pid) / 2**20, "processes": len(tree(server.proc.pid))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--import-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=8, help="refreshes per case, each after a quiet period")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--memory-only", action="store_true", help="skip the refresh figures")
    parser.add_argument("--memory-app", choices=sorted(MEMORY_APPS), default="demo", help="app of the memory figures")
    args = parser.parse_args()
    n, imp = args.workers, args.import_seconds
    env = {"DEMO_BEHAVIOUR": "slow-import", "DEMO_IMPORT_SECONDS": str(imp)}

    refresh_cases = [
        ("graceful refresh, no preload", True, False, "graceful"),
        ("graceful refresh, preload", True, True, "graceful"),
        ("stock HUP, no preload", False, False, "hup"),
        ("stock HUP, preload", False, True, "hup"),
        ("stock TTIN/TTOU loop, no preload", False, False, "ttin-ttou"),
    ]
    memory_dir, memory_app = MEMORY_APPS[args.memory_app]
    uvicorn_worker = "uvicorn_worker.UvicornWorker"
    memory_cases = [
        (
            "graceful preload + gc.freeze + preimport",
            gunicorn_argv(True, n, True, uvicorn_worker, ["--worker-preimport", "auto"], app=memory_app),
        ),
        (
            "  ... + warm-up in the master",
            gunicorn_argv(
                True, n, True, uvicorn_worker, ["--worker-preimport", "auto", "--worker-preload-warmup"], app=memory_app
            ),
        ),
        ("stock gunicorn preload", gunicorn_argv(False, n, True, uvicorn_worker, app=memory_app)),
        ("graceful, no preload", gunicorn_argv(True, n, False, uvicorn_worker, app=memory_app)),
        (
            f"uvicorn --workers {n}",
            [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", "{port}", "--workers", str(n), memory_app],
        ),
    ]
    refresh_cases = [case for case in refresh_cases if args.only in case[0] and not args.memory_only]
    memory_cases = [case for case in memory_cases if args.only in case[0]]
    results, memory = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, graceful, preload, how in refresh_cases:
            server = Server(gunicorn_argv(graceful, n, preload, "asgi"), env, Path(tmp))
            try:
                results.append(measure_refresh(name, server, graceful, how, n, imp, args.rounds))
            finally:
                server.stop()
        for name, argv in memory_cases:
            server = Server(argv, {"DEMO_BEHAVIOUR": "ok"}, Path(tmp), app_dir=memory_dir)
            try:
                memory.append(measure_memory(name, server))
            finally:
                server.stop()

    print(
        f"\nReplacing {n} workers one by one, {args.rounds} times (gunicorn -k asgi, app import {imp:g}s,"
        " 4 keep-alive clients; time is the median, latencies over all rounds)"
    )
    print(
        f"{'':34} {'time s':>7} {'p99 rest ms':>12} {'p99 during ms':>14} {'ratio':>6} {'max ms':>7}"
        f" {'requests':>9} {'failed':>7}"
    )
    for r in results:
        print(
            f"{r['name']:34} {r['seconds']:7.2f} {r['p99_rest_ms']:12.2f} {r['p99_refresh_ms']:14.2f}"
            f" {r['ratio']:6.2f} {r['max_refresh_ms']:7.0f} {r['requests']:9d} {r['failed']:7d}"
        )
    print(f"\nTotal PSS after 3000 requests on {memory_app}, master + {n} workers (uvicorn-worker unless said)")
    for m in memory:
        print(f"{m['name']:44} {m['pss_mib']:7.1f} MiB  ({m['processes']} processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
