"""Airflow's API server under periodic worker refreshes: Airflow's own gunicorn master beside the graceful arbiter.

    make bench-airflow [AIRFLOW_ROUNDS=3] [AIRFLOW_SECONDS=45] [AIRFLOW_INTERVAL=10]
    python bench/airflow_refresh.py --venv build/airflow/venv [--rounds 3] [--seconds 45] [--interval 10]
        [--workers 4] [--connections 8]

Every server serves the same app, `airflow.api_fastapi.main:app` of the venv (examples/airflow/requirements.txt),
on loopback, with Airflow's worker class (AirflowUvicornWorker), `--workers` workers and preload, on a sqlite
database that `airflow db migrate` made:

- `airflow`: `airflow api-server` with `[api] server_type = gunicorn`, whose AirflowArbiter refreshes the workers
  every `--interval` seconds (`[api] worker_refresh_interval`, batch size 1): it forks a worker and stops the
  oldest at its next loop, whether or not the new one can serve yet;
- `graceful`: the graceful arbiter (graceful-gunicorn) with the same settings, a refresh every `--interval`
  seconds without jitter, batch size 1; each replacement waits for the new worker's own health call;
- `graceful+warmup`: the same, with `--worker-preload-warmup`, as examples/airflow deploys it: the master calls
  the app once before it forks, so each worker starts from what that call built (Airflow disposes of its
  database engine in a forked child, so no connection is shared);
- `uvicorn`: `airflow api-server` with its default server type, uvicorn with `--workers` processes and no
  refresh: the memory reference.

A round runs each server in turn, in alternating order, under tests/load/loadgen.py: `--connections` kept-alive
connections sending GET /api/v2/monitor/health as soon as the last answer came, for `--seconds` seconds, with a
10 s client timeout so that slow requests are counted rather than dropped. For each server and round it records:
failed requests (an error or a status other than 200), requests over 1 s, p50, p99 and max latency, the refresh
cycles completed and their median length (from the fork of the first new worker to the exit of the last old one,
read from /proc every 20 ms, the same way for both masters), and the PSS of the master and its workers once the
load ended and no refresh was under way. It prints each round, then the median of the rounds for each server.
Every process it starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "load"))
sys.path.insert(0, str(ROOT / "arbiter"))

import loadgen  # noqa: E402  tests/load/loadgen.py: the recording load client
from processes import children, stop_tree, tree_pss  # noqa: E402  bench/processes.py
from tests.integration.harness import free_port  # noqa: E402  arbiter/tests/integration/harness.py

LOADGEN = ROOT / "tests" / "load" / "loadgen.py"
HEALTH_PATH = "/api/v2/monitor/health"
WORKER_CLASS = "airflow.api_fastapi.gunicorn_app.AirflowUvicornWorker"
APP = "airflow.api_fastapi.main:app"
SLOW_SECONDS = 1.0
CLIENT_TIMEOUT = 10
SERVERS = ("airflow", "graceful", "graceful+warmup", "uvicorn")


class CycleWatch:
    """Refresh cycles of a master, seen from /proc: from the first worker forked beside a settled set of
    workers until none of that set is left."""

    def __init__(self, master: int, interval: float = 0.02):
        self.master, self.interval = master, interval
        self.cycles: list[float] = []
        self.in_cycle = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self):
        settled = set(children(self.master))
        old, started = None, 0.0
        while not self._stop.wait(self.interval):
            now, current = time.monotonic(), set(children(self.master))
            if old is None:
                if current - settled and settled:
                    old, started, self.in_cycle = settled, now, True
                else:
                    settled = current
            elif not old & current:
                self.cycles.append(now - started)
                old, settled, self.in_cycle = None, current, False


class Server:
    """One server under test, started in a session of its own and stopped by PID."""

    def __init__(self, kind: str, venv: Path, home: Path, workdir: Path, workers: int, interval: int):
        self.kind, self.workers = kind, workers
        self.port = free_port()
        bin_dir = venv / "bin"
        env = dict(
            os.environ,
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__API__WORKERS=str(workers),
            AIRFLOW__API__WORKER_TIMEOUT="120",
            AIRFLOW__API__SERVER_TYPE="uvicorn" if kind == "uvicorn" else "gunicorn",
            AIRFLOW__API__WORKER_REFRESH_INTERVAL=str(interval),
            AIRFLOW__API__WORKER_REFRESH_BATCH_SIZE="1",
        )
        if kind in ("airflow", "uvicorn"):
            argv = [str(bin_dir / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(self.port)]
            argv += ["--workers", str(workers)]
        else:
            # The options AirflowGunicornApp sets (create_gunicorn_app), then the arbiter's own.
            argv = [str(bin_dir / "graceful-gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
            argv += ["--worker-class", WORKER_CLASS, "--timeout", "120", "--graceful-timeout", "120"]
            argv += ["--keep-alive", "120", "--preload", "--control-socket", str(workdir / f"ctl-{self.port}.sock")]
            argv += ["--worker-health-path", HEALTH_PATH, "--worker-refresh-interval", str(interval)]
            argv += ["--worker-refresh-jitter", "0", "--worker-refresh-batch-size", "1"]
            if kind == "graceful+warmup":
                argv.append("--worker-preload-warmup")
            argv.append(APP)
        self.log_path = workdir / f"{kind.replace('+', '-')}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", HEALTH_PATH)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def wait_settled(self, timeout: float = 120) -> None:
        """Answering, with exactly its workers (none booting beside them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}; see {self.log_path}")
            if self.answers() and self._worker_count() == self.workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.kind} did not settle within {timeout:g}s; see {self.log_path}")

    def _worker_count(self) -> int:
        workers = children(self.proc.pid)
        if self.kind == "uvicorn":  # uvicorn's supervisor may keep a helper process beside its workers
            return self.workers if len(workers) >= self.workers else len(workers)
        return len(workers)

    def pss_mib(self) -> float:
        return tree_pss(self.proc.pid) / 2**20

    def stop(self) -> None:
        stop_tree(self.proc, timeout=60)
        self._log.close()


def measure(server: Server, seconds: float, connections: int, workdir: Path) -> dict:
    server.wait_settled()
    time.sleep(2)  # past the first requests each worker answers
    records_path = workdir / f"load-{server.port}.jsonl"
    command = [sys.executable, str(LOADGEN), "run", "--url", f"http://127.0.0.1:{server.port}{HEALTH_PATH}"]
    command += ["--out", str(records_path), "--connections", str(connections), "--seconds", str(seconds)]
    command += ["--max-requests", "10000000", "--timeout", str(CLIENT_TIMEOUT)]
    with CycleWatch(server.proc.pid) as watch:
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL, timeout=seconds + 3 * CLIENT_TIMEOUT)
        deadline = time.monotonic() + 60
        while watch.in_cycle and time.monotonic() < deadline:
            time.sleep(0.1)  # PSS is read between refreshes, with the usual number of workers
        pss = server.pss_mib()
    records = loadgen.load_records(records_path)
    latencies = [r["ms"] / 1000 for r in records if r["status"] == 200]
    return {
        "server": server.kind,
        "requests": len(records),
        "failed": sum(1 for r in records if r["status"] != 200),
        "slow": sum(1 for latency in latencies if latency > SLOW_SECONDS),
        "p50_ms": (loadgen.percentile(latencies, 0.50) or float("nan")) * 1000,
        "p99_ms": (loadgen.percentile(latencies, 0.99) or float("nan")) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "cycles": len(watch.cycles),
        "cycle_s": statistics.median(watch.cycles) if watch.cycles else float("nan"),
        "pss_mib": pss,
    }


def row(result: dict) -> str:
    cycles = "-" if result["server"] == "uvicorn" else f"{result['cycles']:g}"
    cycle_s = "-" if result["cycle_s"] != result["cycle_s"] else f"{result['cycle_s']:.2f}"
    return (
        f"{result['server']:16} {result['requests']:9,.0f} {result['failed']:7,.0f} {result['slow']:7,.0f}"
        f" {result['p50_ms']:8.1f} {result['p99_ms']:8.1f} {result['max_ms']:8.0f} {cycles:>7} {cycle_s:>8}"
        f" {result['pss_mib']:8.0f}"
    )


HEADER = (
    f"{'server':16} {'requests':>9} {'failed':>7} {'>1 s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    f" {'cycles':>7} {'cycle s':>8} {'PSS MiB':>8}"
)


def medians(results: list[dict], kind: str) -> dict:
    mine = [r for r in results if r["server"] == kind]
    summary = {"server": kind}
    for key in ("requests", "failed", "slow", "p50_ms", "p99_ms", "max_ms", "cycles", "cycle_s", "pss_mib"):
        values = [r[key] for r in mine if r[key] == r[key]]  # NaN: no cycle in that round
        summary[key] = statistics.median(values) if values else float("nan")
    return summary


def migrate(venv: Path, home: Path) -> None:
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=ROOT / "build" / "airflow" / "venv")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every server once")
    parser.add_argument("--seconds", type=float, default=45, help="seconds of load for each server and round")
    parser.add_argument("--interval", type=int, default=10, help="seconds between refreshes")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8, help="kept-alive connections of the load client")
    parser.add_argument("--only", default="", help="comma-separated servers to run (default: all)")
    parser.add_argument("--json", type=Path, help="write every round's figures here too")
    args = parser.parse_args()
    kinds = [k for k in SERVERS if not args.only or k in args.only.split(",")]
    if not (args.venv / "bin" / "graceful-gunicorn").exists():
        parser.error(f"--venv {args.venv}: no graceful-gunicorn in it; make bench-airflow builds it")
    if args.rounds < 1 or args.seconds < 2 * args.interval:
        parser.error("--rounds must be at least 1 and --seconds at least twice --interval")

    results: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="airflow-bench-"))
    try:
        home = workdir / "airflow-home"
        home.mkdir()
        migrate(args.venv, home)
        print(
            f"{args.workers} workers, a refresh every {args.interval} s, {args.connections} kept-alive connections"
            f" on GET {HEALTH_PATH}, {args.seconds:g} s a server and round",
            flush=True,
        )
        for round_number in range(args.rounds):
            order = kinds if round_number % 2 == 0 else list(reversed(kinds))
            print(f"\nround {round_number + 1}\n{HEADER}", flush=True)
            for kind in order:
                server = Server(kind, args.venv, home, workdir, args.workers, args.interval)
                try:
                    result = measure(server, args.seconds, args.connections, workdir)
                finally:
                    server.stop()
                results.append(result)
                print(row(result), flush=True)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmedian of {args.rounds} rounds\n{HEADER}")
    for kind in kinds:
        print(row(medians(results, kind)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
