# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Taking a new worker that never got ready out of a stock gunicorn master, without retiring an old one for it.

Only the stock refresh needs this: the bundled arbiter retires its own bad workers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import time

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc


def remove_stuck_worker(run, identity, worker, wait=5.0):
    """Take a new worker that never got ready out of a stock master without retiring an old one for it.

    SIGTTOU alone would make gunicorn SIGTERM its *oldest* worker, and a killed worker alone is replaced at once.
    So the master is held (SIGSTOP) while the worker is SIGKILLed (it stays a zombie, its SIGCHLD pending), then
    continued and sent SIGTTOU right away (a stop signal queued before SIGCONT would be discarded by it). Both are
    pending when the master resumes and run in signal-number order: SIGCHLD (17, the dead worker is reaped) before
    SIGTTOU (22, the count drops to the workers left), in one turn of its loop, so it neither forks nor retires
    anyone. The master is always continued.

    Both processes are checked (the worker must be a child of the verified master, with its uid and cgroup) and
    held through pidfds before the first signal. Returns the master's children that appeared meanwhile (none
    expected). Raises gunicorn_trust.Refused, before any signal, when the worker fails its check.
    """
    master = identity.pid
    with contextlib.ExitStack() as stack:
        master_handle = identity.open_master()
        if master_handle is None:
            return []
        stack.enter_context(master_handle)
        worker_handle = identity.open_worker(worker)
        if worker_handle is None:
            return []
        stack.enter_context(worker_handle)
        before = set(proc.children_by_parent().get(master, []))
        run.record(master, "SIGSTOP", master_handle.send("SIGSTOP"))
        try:
            deadline = time.time() + wait
            while (proc.stat(master) or {}).get("state") not in ("T", "t", None) and time.time() < deadline:
                time.sleep(0.001)
            run.record(worker, "SIGKILL", worker_handle.send("SIGKILL"))
            while proc.alive(worker) and time.time() < deadline:
                time.sleep(0.001)
        finally:
            _continue_then_ttou(run, master, master_handle)
    deadline = time.time() + wait
    while os.path.exists("/proc/%d" % worker) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    return sorted(set(proc.children_by_parent().get(master, [])) - before - {worker})


def _continue_then_ttou(run, master, handle):
    """SIGCONT and SIGTTOU back to back, from a CPU other than the master's, so SIGTTOU is pending before it runs."""
    affinity = None
    try:
        affinity = os.sched_getaffinity(0)
        cpu = int(proc._read("/proc/%d/stat" % master).rsplit(")", 1)[1].split()[36])
        others = affinity - {cpu}
        if others:
            os.sched_setaffinity(0, others)
    except (AttributeError, OSError, ValueError, IndexError, TypeError):
        affinity = None
    cont = ttou = False
    try:
        cont = handle.send("SIGCONT")
        ttou = handle.send("SIGTTOU")
    except OSError:
        pass
    finally:
        if affinity:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, affinity)
    for name, delivered in (("SIGCONT", cont), ("SIGTTOU", ttou)):
        run.record(master, name, delivered)
