"""A bounded HTTP load client that records every request, and the report it prints.

    loadgen.py run --url URL [--url URL ...] --out FILE [--connections N] [--seconds S]
                   [--max-requests N] [--rate R] [--no-keepalive] [--stop-on-close] [--stop-file PATH]
                   [--bridge BRIDGE]
    loadgen.py report FILE [--marks FILE] [--chart PNG] [--json FILE]

`run` sends GET requests from N threads per URL until S seconds pass, N requests were sent, or the
stop file appears, whichever comes first; with --rate, each thread sends at most R requests a second.
With --stop-on-close, a thread stops once the server ends its kept-alive connection with a
`Connection: close` response, as a client does that the server drains away (a stopping service):
it then measures only the requests the server had not yet turned away.
It writes one JSON line per request: start time, latency, target, status (0 for a connection
error), the served version and pid when the body is JSON. Targets must be on loopback, or reached
through the named bridge (checked with `ip route get` before the first request).

`report` prints requests sent and failed, p50/p99 latency before, during and after the window the
marks file names (`{"during": [t0, t1]}`), and per target when each served version was first and
last seen; with --chart it draws latency over time as a PNG.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit


class RouteError(SystemExit):
    pass


def check_route(host: str, bridge: str | None) -> None:
    """Refuse any target that is not loopback and not routed through the lab's bridge."""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return
    if not bridge:
        raise RouteError(f"loadgen: {host} is not loopback and no --bridge was given; refusing to send")
    out = subprocess.run(["ip", "-j", "route", "get", host], check=True, capture_output=True, text=True).stdout
    dev = json.loads(out)[0].get("dev")
    if dev != bridge:
        raise RouteError(f"loadgen: route to {host} goes via {dev}, not {bridge}; refusing to send")


class Recorder:
    def __init__(self, path: Path):
        self._file = path.open("w", buffering=1 << 16)
        self._lock = threading.Lock()
        self.sent = 0

    def add(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self.sent += 1

    def close(self) -> None:
        self._file.close()


def _connect(parts, timeout: float) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


KEEPALIVE_RACES = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _exchange(conn, path: str, keepalive: bool, record: dict):
    """One request and response; returns the connection to reuse, or None."""
    conn.request("GET", path, headers={} if keepalive else {"Connection": "close"})
    response = conn.getresponse()
    body = response.read()
    record["status"] = response.status
    try:
        payload = json.loads(body)
        record["version"] = payload.get("version")
        record["pid"] = payload.get("pid")
    except ValueError:
        pass
    if not keepalive or response.will_close:
        conn.close()
        return None
    return conn


def _failed(record: dict, exc: BaseException) -> None:
    record["status"] = 0
    record["error"] = type(exc).__name__


def worker(
    url: str,
    keepalive: bool,
    stop: threading.Event,
    budget: list[int],
    lock: threading.Lock,
    recorder: Recorder,
    timeout: float,
    rate: float = 0,
    stop_on_close: bool = False,
) -> None:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    target = parts.netloc
    conn = None
    interval = 1.0 / rate if rate > 0 else 0.0
    next_send = time.monotonic()
    while not stop.is_set():
        if interval:
            pause = next_send - time.monotonic()
            if pause > 0 and stop.wait(pause):
                break
            next_send = max(next_send + interval, time.monotonic() - interval)
        with lock:
            if budget[0] <= 0:
                stop.set()
                break
            budget[0] -= 1
        started = time.time()
        record = {"t": started, "target": target}
        reused = conn is not None
        conn = conn or _connect(parts, timeout)
        try:
            conn = _exchange(conn, path, keepalive, record)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conn = None
            if reused and isinstance(exc, KEEPALIVE_RACES):
                # The server closed a kept-alive connection as this request went out: clients retry
                # that once on a new connection (urllib3 and browsers do for idempotent requests).
                record["retried"] = type(exc).__name__
                fresh = _connect(parts, timeout)
                try:
                    conn = _exchange(fresh, path, keepalive, record)
                except (OSError, http.client.HTTPException) as retry_exc:
                    fresh.close()
                    _failed(record, retry_exc)
            else:
                _failed(record, exc)
        record["ms"] = round((time.time() - started) * 1000, 2)
        recorder.add(record)
        if stop_on_close and keepalive and conn is None and 200 <= record["status"] < 400:
            break  # the server said Connection: close: this client goes away
    if conn is not None:
        conn.close()


def run(args: argparse.Namespace) -> int:
    for url in args.url:
        check_route(urlsplit(url).hostname, args.bridge)
    recorder = Recorder(Path(args.out))
    stop = threading.Event()
    budget = [args.max_requests]
    lock = threading.Lock()
    threads = [
        threading.Thread(
            target=worker,
            args=(url, args.keepalive, stop, budget, lock, recorder, args.timeout, args.rate, args.stop_on_close),
            daemon=True,
        )
        for url in args.url
        for _connection in range(args.connections)
    ]
    deadline = time.monotonic() + args.seconds
    for thread in threads:
        thread.start()
    while not stop.is_set() and time.monotonic() < deadline:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        if not any(thread.is_alive() for thread in threads):
            break  # every client went away (--stop-on-close)
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=args.timeout + 1)
    recorder.close()
    print(f"loadgen: {recorder.sent} requests recorded in {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ report


def load_records(path: Path) -> list[dict]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    # Nearest rank: the smallest value that at least `fraction` of the values do not exceed.
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarise(records: list[dict], during: tuple[float, float] | None) -> dict:
    def window(name: str) -> list[dict]:
        if during is None:
            return records if name == "all" else []
        start, end = during
        if name == "before":
            return [r for r in records if r["t"] < start]
        if name == "during":
            return [r for r in records if start <= r["t"] <= end]
        if name == "after":
            return [r for r in records if r["t"] > end]
        return records

    summary = {"sent": len(records), "failed": sum(1 for r in records if not 200 <= r["status"] < 400)}
    for name in ("before", "during", "after", "all"):
        chosen = window(name)
        ok = [r["ms"] for r in chosen if 200 <= r["status"] < 400]
        summary[name] = {
            "requests": len(chosen),
            "failed": len(chosen) - len(ok),
            "p50_ms": percentile(ok, 0.50),
            "p99_ms": percentile(ok, 0.99),
        }
    timeline: dict[str, dict[str, dict]] = {}
    for r in records:
        if r.get("version") is None:
            continue
        seen = timeline.setdefault(r["target"], {}).setdefault(r["version"], {"first": r["t"], "last": r["t"]})
        seen["first"] = min(seen["first"], r["t"])
        seen["last"] = max(seen["last"], r["t"])
    summary["timeline"] = timeline
    errors: dict[str, int] = {}
    for r in records:
        if r["status"] == 0 or r["status"] >= 400:
            key = r.get("error") or f"HTTP {r['status']}"
            errors[key] = errors.get(key, 0) + 1
    summary["errors"] = errors
    summary["keepalive_retries"] = sum(1 for r in records if r.get("retried"))
    return summary


def format_report(summary: dict, origin: float) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"requests sent: {summary['sent']}   failed: {summary['failed']}"
        f"   (kept-alive connections closed under a request and retried once: {summary['keepalive_retries']})"
    ]
    if summary["errors"]:
        lines.append("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(summary["errors"].items())))
    lines.append(f"{'window':<8} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("before", "during", "after", "all"):
        w = summary[name]
        if w["requests"]:
            lines.append(f"{name:<8} {w['requests']:>9} {w['failed']:>7} {ms(w['p50_ms']):>8} {ms(w['p99_ms']):>8}")
    if summary["timeline"]:
        lines.append("per-host timeline (seconds from the start of the load):")
        for target in sorted(summary["timeline"]):
            versions = summary["timeline"][target]
            spans = "  ".join(
                f"{v} {seen['first'] - origin:6.1f}s..{seen['last'] - origin:6.1f}s"
                for v, seen in sorted(versions.items(), key=lambda kv: kv[1]["first"])
            )
            lines.append(f"  {target:<22} {spans}")
    return "\n".join(lines)


def draw_chart(records: list[dict], during, path: Path, origin: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for target in sorted({r["target"] for r in records}):
        ok = [(r["t"] - origin, r["ms"]) for r in records if r["target"] == target and 200 <= r["status"] < 400]
        if ok:
            xs, ys = zip(*ok)
            ax.scatter(xs, ys, s=2, alpha=0.5, label=target)
    failed = [(r["t"] - origin, r["ms"]) for r in records if not 200 <= r["status"] < 400]
    if failed:
        xs, ys = zip(*failed)
        ax.scatter(xs, ys, s=18, marker="x", color="red", label=f"failed ({len(failed)})")
    if during:
        ax.axvspan(during[0] - origin, during[1] - origin, color="orange", alpha=0.12, label="rolling upgrade")
    # Where each host first served a release it did not serve when the load started.
    for target, versions in sorted(summarise(records, None)["timeline"].items()):
        switches = sorted(versions.items(), key=lambda kv: kv[1]["first"])[1:]
        for version, seen in switches:
            ax.axvline(seen["first"] - origin, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(
                f"{target.split(':')[0]} -> {version}",
                (seen["first"] - origin, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="dimgrey",
            )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Request latency during a rolling upgrade")
    ax.legend(loc="lower right", markerscale=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(args: argparse.Namespace) -> int:
    records = load_records(Path(args.file))
    if not records:
        print("loadgen: no requests recorded", file=sys.stderr)
        return 1
    origin = min(r["t"] for r in records)
    during = None
    if args.marks and Path(args.marks).exists():
        marks = json.loads(Path(args.marks).read_text())
        if marks.get("during"):
            during = tuple(marks["during"])
    summary = summarise(records, during)
    print(format_report(summary, origin))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.chart:
        draw_chart(records, during, Path(args.chart), origin)
        print(f"latency chart: {args.chart}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--url", action="append", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--connections", type=int, default=2, help="threads per URL")
    r.add_argument("--seconds", type=float, default=60)
    r.add_argument("--max-requests", type=int, default=200_000)
    r.add_argument("--timeout", type=float, default=10)
    r.add_argument("--rate", type=float, default=0, help="requests a second per thread (0: as fast as answered)")
    r.add_argument("--no-keepalive", dest="keepalive", action="store_false")
    r.add_argument(
        "--stop-on-close", action="store_true", help="end a thread once the server closes its connection gracefully"
    )
    r.add_argument("--stop-file")
    r.add_argument("--bridge", default=os.environ.get("LAB_BRIDGE"))
    p = sub.add_parser("report")
    p.add_argument("file")
    p.add_argument("--marks")
    p.add_argument("--chart")
    p.add_argument("--json")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
