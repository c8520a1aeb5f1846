# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""HTTP health probe over TCP (http/https) or a unix socket, through ansible.module_utils.urls.

TLS is verified as ansible's `make_context` does (`validate_certs`, `ca_path`). When `host_header`
is set, it is also the TLS server name: the SNI sent and the name the certificate must carry, so an
https probe to an address checks the certificate of the virtual host it asks for. A probe goes
straight to its address: no proxy from the environment, no ~/.netrc credentials, no redirects
followed (a 3xx is a status like any other).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import Request, make_context

try:
    import http.client as http_client
    import urllib.error as urllib_error
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported, but sanity's import test runs it
    http_client = None
    urllib_error = None
    urlsplit = None

BODY_LIMIT = 65536  # bytes of a response body read for body_pattern


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


def request_url(probe):
    """The URL handed to urllib: the address for TCP; for a unix socket only its Host matters."""
    if probe["socket"]:
        return "http://%s%s" % (probe["host_header"] or "localhost", probe["path"])
    host = probe["host"]
    if ":" in host:  # an IPv6 literal
        host = "[%s]" % host
    port = ":%d" % probe["port"] if probe["port"] else ""
    return "%s://%s%s%s" % (probe["scheme"], host, port, probe["path"])


def tls_context(probe):
    """ansible's TLS context for the probe; with host_header, that name is the TLS server name.

    urllib takes the server name from the URL, which holds the address. Wrapping sockets with
    `server_hostname` replaced makes the handshake send host_header as SNI and, when certificates
    are validated, match the certificate against host_header instead of the address.
    """
    context = make_context(cafile=probe["ca_path"] or None, validate_certs=probe["validate_certs"])
    server_name = probe["host_header"]
    if server_name and not probe["socket"]:
        wrap_socket = context.wrap_socket

        def wrap_socket_for_host_header(sock, *args, **kwargs):
            kwargs["server_hostname"] = server_name
            return wrap_socket(sock, *args, **kwargs)

        context.wrap_socket = wrap_socket_for_host_header
    return context


def _failure_detail(exc):
    if isinstance(exc, urllib_error.URLError) and not isinstance(exc, urllib_error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return "%s: %s" % (type(reason).__name__, reason)
        return "URLError: %s" % reason
    return "%s: %s" % (type(exc).__name__, exc)


def probe_once(probe):
    """One request on a fresh connection. Returns {'ok', 'status', 'detail', 'elapsed', 'at'}."""
    started = time.time()
    result = {"ok": False, "status": None, "detail": "", "elapsed": 0.0, "at": round(started, 3)}
    response = None
    headers = {"Connection": "close"}
    if probe["host_header"]:
        headers["Host"] = probe["host_header"]
    try:
        try:
            response = Request().open(
                "GET",
                request_url(probe),
                headers=headers,
                use_proxy=False,
                timeout=probe["timeout"],
                http_agent="graceful.gunicorn-health",
                follow_redirects="none",
                unix_socket=probe["socket"] or None,
                decompress=False,
                use_netrc=False,
                context=tls_context(probe),
            )
        except urllib_error.HTTPError as exc:  # a status urllib calls an error is still an answer
            response = exc
        status = response.status if response.status is not None else response.code
        body = response.read(BODY_LIMIT)
        result["status"] = status
        result["ok"], result["detail"] = evaluate(probe, status, body)
    except (OSError, http_client.HTTPException, UrlsConnectionError, ValueError) as exc:
        result["detail"] = _failure_detail(exc)
    finally:
        if response is not None:
            response.close()
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
