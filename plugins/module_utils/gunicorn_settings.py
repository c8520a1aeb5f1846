# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gunicorn setting names the collection accepts, and helpers to name a typo's nearest match.

The list is checked on the controller, before any host is touched: gunicorn itself silently ignores
unknown names in a configuration file, so a misspelt setting would otherwise be dropped without a word.
tests/unit/test_gunicorn_settings.py compares it with the installed gunicorn and arbiter.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib

GUNICORN_VERSION = "27.0.1"

# gunicorn 27.0.1: [setting.name for setting in gunicorn.config.KNOWN_SETTINGS], in gunicorn's order.
GUNICORN_SETTINGS = (
    "config",
    "wsgi_app",
    "bind",
    "backlog",
    "workers",
    "worker_class",
    "threads",
    "worker_connections",
    "max_requests",
    "max_requests_jitter",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "reload",
    "reload_engine",
    "reload_extra_files",
    "spew",
    "check_config",
    "print_config",
    "preload_app",
    "sendfile",
    "reuse_port",
    "chdir",
    "daemon",
    "raw_env",
    "pidfile",
    "worker_tmp_dir",
    "user",
    "group",
    "umask",
    "initgroups",
    "tmp_upload_dir",
    "secure_scheme_headers",
    "forwarded_allow_ips",
    "accesslog",
    "disable_redirect_access_to_syslog",
    "access_log_format",
    "errorlog",
    "loglevel",
    "capture_output",
    "logger_class",
    "logconfig",
    "logconfig_dict",
    "logconfig_json",
    "syslog_addr",
    "syslog",
    "syslog_prefix",
    "syslog_facility",
    "enable_stdio_inheritance",
    "statsd_host",
    "dogstatsd_tags",
    "statsd_prefix",
    "enable_backlog_metric",
    "proc_name",
    "default_proc_name",
    "pythonpath",
    "paste",
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "ssl_context",
    "proxy_protocol",
    "proxy_allow_ips",
    "protocol",
    "uwsgi_allow_ips",
    "keyfile",
    "certfile",
    "ssl_version",
    "cert_reqs",
    "ca_certs",
    "suppress_ragged_eofs",
    "do_handshake_on_connect",
    "ciphers",
    "http_protocols",
    "http2_cleartext",
    "http2_max_concurrent_streams",
    "http2_initial_window_size",
    "http2_max_frame_size",
    "http2_max_header_list_size",
    "raw_paste_global_conf",
    "permit_obsolete_folding",
    "strip_header_spaces",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "forwarder_headers",
    "header_map",
    "asgi_loop",
    "asgi_lifespan",
    "asgi_disconnect_grace_period",
    "websocket_max_message_size",
    "http_parser",
    "root_path",
    "dirty_apps",
    "dirty_workers",
    "dirty_timeout",
    "dirty_threads",
    "dirty_graceful_timeout",
    "on_dirty_starting",
    "dirty_post_fork",
    "dirty_worker_init",
    "dirty_worker_exit",
    "control_socket",
    "control_socket_mode",
    "control_socket_disable",
)

# Registered by the bundled arbiter (graceful_arbiter.settings.SETTING_NAMES).
ARBITER_SETTINGS = (
    "worker_refresh_interval",
    "worker_refresh_jitter",
    "worker_refresh_batch_size",
    "worker_boot_timeout",
    "worker_health_path",
    "worker_health_host",
    "worker_refresh_backoff",
    "worker_max_memory",
    "worker_max_memory_metric",
    "worker_refresh_on_change",
    "worker_gc_freeze",
    "worker_preimport",
    "worker_preload_warmup",
)

KNOWN_SETTINGS = frozenset(GUNICORN_SETTINGS + ARBITER_SETTINGS)


def nearest_setting(name, known=None):
    """The known setting name closest to name, or None when nothing is reasonably close."""
    candidates = sorted(known if known is not None else KNOWN_SETTINGS)
    lowered = str(name).strip().lower().replace("-", "_")
    if lowered in candidates:
        return lowered
    # A name that is the start of a longer one ("preload" for "preload_app") most likely means that one,
    # even where another name is closer by edit distance ("reload").
    prefixed = [c for c in candidates if c.startswith(lowered)] if len(lowered) >= 4 else []
    matches = difflib.get_close_matches(lowered, prefixed or candidates, n=1, cutoff=0.0 if prefixed else 0.6)
    return matches[0] if matches else None


def unknown_settings(names, extra=()):
    """For each name gunicorn would not know, a dict with the name and its nearest valid one.

    extra adds names to accept (for settings registered by other code than gunicorn and the arbiter).
    The result keeps the input order; suggestion is None when no known name is close.
    """
    known = KNOWN_SETTINGS.union(extra or ())
    result = []
    for name in names:
        if name in known:
            continue
        result.append({"name": name, "suggestion": nearest_setting(name, known)})
    return result
