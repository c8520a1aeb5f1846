# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""HTTP health probe over TCP (http/https) or a unix socket, stdlib http.client only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import socket
import ssl
import time

try:
    import http.client as http_client
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported, but sanity's import test runs it
    http_client = None
    urlsplit = None


class UnixHTTPConnection(http_client.HTTPConnection if http_client else object):
    """An HTTPConnection to a unix domain socket; `host` only fills the Host header."""

    def __init__(self, socket_path, host="localhost", timeout=5.0):
        http_client.HTTPConnection.__init__(self, host, timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except Exception:
            sock.close()
            raise
        self.sock = sock


def build_probe(params):
    """The probe's settings from module parameters, or None when no health check is configured.

    Raises ValueError for settings that cannot work (checked before any signal is sent).
    """
    url = params.get("health_url")
    sock = params.get("health_socket")
    if not url and not sock:
        return None
    probe = {
        "socket": sock,
        "scheme": "http",
        "host": "localhost",
        "port": None,
        "path": "",
        "host_header": params.get("host_header"),
        "expected_status": list(params.get("expected_status") or [200]),
        "body_pattern": None,
        "validate_certs": params.get("validate_certs", True),
        "ca_path": params.get("ca_path"),
        "timeout": float(params.get("health_timeout") or 5.0),
    }
    base_path = ""
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("health_url must be an http:// or https:// URL with a host, got %r" % url)
        probe["scheme"] = parts.scheme
        probe["host"] = parts.hostname
        probe["port"] = parts.port
        base_path = parts.path.rstrip("/")
    prefix = (params.get("url_prefix") or "").strip()
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    path = params.get("health_path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    probe["path"] = base_path + prefix.rstrip("/") + path
    if params.get("body_pattern"):
        try:
            probe["body_pattern"] = re.compile(params["body_pattern"])
        except re.error as exc:
            raise ValueError("body_pattern is not a valid regular expression: %s" % exc) from None
    return probe


def describe(probe):
    if probe is None:
        return None
    if probe["socket"]:
        return "http+unix://%s%s" % (probe["socket"], probe["path"])
    port = ":%d" % probe["port"] if probe["port"] else ""
    return "%s://%s%s%s" % (probe["scheme"], probe["host"], port, probe["path"])


def evaluate(probe, status, body):
    """Pure verdict on one response: (ok, reason)."""
    if status not in probe["expected_status"]:
        return False, "status %d, expected %s" % (status, "/".join(str(s) for s in probe["expected_status"]))
    if probe["body_pattern"] is not None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if not probe["body_pattern"].search(text or ""):
            return False, "body does not match %r" % probe["body_pattern"].pattern
    return True, "status %d" % status


def _connection(probe):
    if probe["socket"]:
        return UnixHTTPConnection(probe["socket"], host=probe["host_header"] or "localhost", timeout=probe["timeout"])
    if probe["scheme"] == "https":
        if probe["validate_certs"]:
            context = (
                ssl.create_default_context(cafile=probe["ca_path"])
                if probe["ca_path"]
                else (ssl.create_default_context())
            )
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http_client.HTTPSConnection(probe["host"], probe["port"], timeout=probe["timeout"], context=context)
    return http_client.HTTPConnection(probe["host"], probe["port"], timeout=probe["timeout"])


def probe_once(probe):
    """One request on a fresh connection. Returns {'ok', 'status', 'detail', 'elapsed', 'at'}."""
    started = time.time()
    result = {"ok": False, "status": None, "detail": "", "elapsed": 0.0, "at": round(started, 3)}
    conn = None
    try:
        conn = _connection(probe)
        headers = {"Connection": "close", "User-Agent": "graceful.gunicorn-health"}
        if probe["host_header"]:
            headers["Host"] = probe["host_header"]
        conn.request("GET", probe["path"], headers=headers)
        response = conn.getresponse()
        body = response.read(65536)
        result["status"] = response.status
        result["ok"], result["detail"] = evaluate(probe, response.status, body)
    except (OSError, http_client.HTTPException, ssl.SSLError, ValueError) as exc:
        result["detail"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        if conn is not None:
            conn.close()
        result["elapsed"] = round(time.time() - started, 3)
    return result


class HealthTracker:
    """Counts consecutive successes and failures of probes over a phase; pure bookkeeping."""

    def __init__(self):
        self.streak = 0
        self.failures = 0
        self.attempts = 0
        self.last = None

    def record(self, result):
        self.attempts += 1
        self.last = result
        if result["ok"]:
            self.streak += 1
        else:
            self.streak = 0
            self.failures += 1

    def summary(self):
        return {"attempts": self.attempts, "failures": self.failures, "streak": self.streak, "last": self.last}


def wait_healthy(probe, needed, deadline, interval=0.5, max_failures=None):
    """Probe until `needed` consecutive successes, the deadline, or `max_failures` failures.

    Returns (ok, summary dict).
    """
    tracker = HealthTracker()
    while True:
        tracker.record(probe_once(probe))
        if tracker.streak >= needed:
            return True, tracker.summary()
        if max_failures is not None and tracker.failures >= max_failures:
            return False, tracker.summary()
        if time.time() >= deadline:
            return False, tracker.summary()
        time.sleep(interval)
