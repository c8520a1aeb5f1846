# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What gunicorn_reload and gunicorn_refresh share beyond the operation core: observing a master and its workers
through /proc and the arbiter's channel, and telling whether it preloads the app.

Decisions live in refresh_plan; preflight, signals and phases in gunicorn_operation; this only observes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_channel as channel
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc

POLL = 0.1
_PRELOAD_LINE = re.compile(r"^\s*preload_app\s*=\s*(True|1)\b", re.MULTILINE)


def preload_of(status, argv, config_text):
    """Whether the master preloads the app: from the arbiter's status, else --preload or the config file.

    None when it cannot be told (stock gunicorn with a config file computing the value).
    """
    if status is not None:
        return bool((status.get("config") or {}).get("preload_app"))
    if "--preload" in (argv or ()):
        return True
    if config_text is None:
        return None
    if _PRELOAD_LINE.search(config_text):
        return True
    if re.search(r"^\s*preload_app\s*=", config_text, re.MULTILINE):
        return None if not re.search(r"^\s*preload_app\s*=\s*(False|0)\b", config_text, re.MULTILINE) else False
    return False


def observe(pid, target, params, use_channel, identity=None, run=None):
    """(master alive, workers [{pid, ready, ...}], arbiter status or None) of a master now.

    With `run`, a control socket reply naming a running stranger as a worker fails the module (run.refused)."""
    if not proc.alive(pid):
        return False, [], None
    judge = identity.judge_new_pid if identity is not None else None
    snap = proc.snapshot(pid, target["pidfile"], params["worker_ready_seconds"], judge)
    workers = snap["workers"]
    status = channel.status(target["control_socket"], pid, timeout=2.0, memory=False) if use_channel else None
    if status is not None and identity is not None and run is not None:
        refusal = common.channel_refusal(status, identity)
        if refusal:
            run.refused(refusal)
    if status is not None:
        states = dict((w["pid"], w.get("state")) for w in status.get("workers") or [])
        workers = [dict(w, ready=bool(w["ready"] and states.get(w["pid"]) == "ready")) for w in workers]
    return proc.alive(pid), workers, status


def read_text(path, limit=1024 * 1024):
    try:
        with open(path) as handle:
            return handle.read(limit)
    except (IOError, OSError, UnicodeDecodeError):
        return None
