#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gunicorn_info
short_description: Report a gunicorn master, its workers and any upgrade in flight
version_added: 0.1.0
description:
  - Finds the master through its pidfile or the unit's C(MainPID), checks it is a gunicorn master for this instance,
    and reports it with its workers (PID, age, RSS and PSS memory, readiness), the worker generation and last
    refresh (from the bundled arbiter's channel when reachable) and a second master of a binary upgrade in flight.
  - Read-only. Health options are used only when O(check_health=true).
author:
  - graceful.gunicorn maintainers (@graceful-gunicorn)
extends_documentation_fragment:
  - graceful.gunicorn.gunicorn
options:
  check_health:
    description:
      - Also make one health request and report it in RV(health).
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details: The module only reads; check mode changes nothing.
  diff_mode:
    description: Returns no diff.
    support: none
seealso:
  - module: graceful.gunicorn.gunicorn_upgrade
"""

EXAMPLES = r"""
- name: Read the state of the shop instance
  graceful.gunicorn.gunicorn_info:
    instance: shop
  register: shop

- name: Fail when an upgrade is still in flight
  ansible.builtin.assert:
    that: not shop.upgrade_in_flight
"""

RETURN = r"""
master:
  description:
    - The master; C(master.flavour) is V(graceful) for the bundled arbiter, V(stock) otherwise.
    - C(master.release) is the release directory it runs (C(<root>/releases/<release>)), from the directory it
      started in, or null when it runs outside a release layout. With the instance manifest, only a directory
      under the instance's own C(releases/) counts, so an app that moves its working directory elsewhere shows
      null.
  returned: always
  type: dict
  sample: {"pid": 4242, "ppid": 1, "started": 1700000000.0, "age": 3600.5, "rss": 52428800, "pss": 30408704,
           "flavour": "graceful", "release": "2.4.1",
           "cmdline": "/srv/venv/bin/python3 /srv/venv/bin/graceful-gunicorn -c ..."}
workers:
  description:
    - The master's workers. C(heartbeat) is whether gunicorn's heartbeat shows the worker ran its main
      loop (null when unreadable); C(ready) adds the minimum age, or is the arbiter's own verdict.
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 4250, "ppid": 4242, "started": 1700000001.0, "age": 3599.5, "rss": 61865984, "pss": 20971520,
            "heartbeat": true, "heartbeat_age": 0.4, "ready": true}]
worker_count:
  description: Number of workers.
  returned: always
  type: int
  sample: 4
ready_workers:
  description: Number of workers ready.
  returned: always
  type: int
  sample: 4
generation:
  description: The arbiter's worker generation (bundled arbiter only), else null.
  returned: always
  type: int
  sample: 3
last_refresh:
  description: The bundled arbiter's last rolling refresh (id, trigger, outcome, times), else null.
  returned: always
  type: dict
  sample: {"id": 2, "trigger": "manual", "outcome": "succeeded", "replaced": 4, "started_at": 1700000100.0,
           "finished_at": 1700000108.0, "error": null, "request_id": 1, "targets": 4}
upgrade_in_flight:
  description: Whether a second master of a binary upgrade is running.
  returned: always
  type: bool
  sample: false
new_master:
  description: The second master of an upgrade in flight, with its workers under C(new_master.workers), or null.
  returned: always
  type: dict
  sample: null
memory:
  description: Total RSS and PSS in bytes of the master, its workers and any second master with its workers.
  returned: always
  type: dict
  sample: {"rss": 300000000, "pss": 120000000}
unit:
  description: The systemd unit and whether it was checked; C(unit.reason) says why not.
  returned: always
  type: dict
  sample: {"name": "gunicorn-shop.service", "checked": true, "reason": null, "active_state": "active",
           "main_pid": 4242, "load_state": "loaded"}
arbiter_status:
  description: The bundled arbiter's full C(graceful status) reply, or null when it has no reachable channel.
  returned: always
  type: dict
  sample: null
health:
  description: One health request's result when O(check_health=true), else null.
  returned: always
  type: dict
  sample: {"target": "http://127.0.0.1:8000/health", "ok": true, "status": 200, "detail": "status 200",
           "elapsed": 0.004, "at": 1700000000.0}
notes:
  description: Observations (skipped unit checks, MainPID and pidfile disagreeing).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_channel as channel
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc


def gather(target, params):
    """Everything gunicorn_info reports, as a dict; raises proc.DiscoveryError."""
    identity = common.locate_master(target, params)
    pid, unit, notes = identity.pid, identity.unit, identity.notes
    snap = proc.snapshot(
        pid, target["pidfile"], params["worker_ready_seconds"], identity.judge_new_pid, common.releases_dir(params)
    )
    refusal = common.second_master_refusal(snap, pid)
    if refusal:
        notes.append(refusal)
    status = channel.status(target["control_socket"], pid)
    workers = snap["workers"]
    if status is not None:
        ready = set(channel.ready_pids(status))
        workers = [dict(w, ready=w["pid"] in ready) for w in workers]
    new_master = None
    if snap["new_master"]:
        new_master = dict(snap["new_master"], workers=snap["new_workers"])
    # "unknown" when a process title hides the command line: the unit's program decides, as for the operations.
    master = snap["master"]
    if master is not None:
        master = dict(master, flavour=common.flavour_of(snap, params["arbiter"], (unit or {}).get("exec_start")))
    return dict(
        master=master,
        workers=workers,
        worker_count=len(workers),
        ready_workers=sum(1 for w in workers if w["ready"]),
        generation=((status or {}).get("master") or {}).get("generation"),
        last_refresh=((status or {}).get("refresh") or {}).get("last"),
        upgrade_in_flight=new_master is not None,
        new_master=new_master,
        memory=common.total_memory(snap),
        unit=unit,
        arbiter_status=status,
        notes=notes,
    )


def main():
    argument_spec = common.common_argument_spec()
    argument_spec.update(check_health=dict(type="bool", default=False))
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=common.COMMON_MUTUALLY_EXCLUSIVE,
        required_one_of=common.COMMON_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params, probe = common.checked_options(module)
    if params["check_health"] and probe is None:
        module.fail_json(msg="invalid options: check_health needs health_url or health_socket", changed=False)
    target = common.resolve_target(params)
    try:
        result = gather(target, params)
    except proc.DiscoveryError as exc:
        module.fail_json(msg=str(exc))
    result["health"] = None
    if params["check_health"]:
        result["health"] = dict(health.probe_once(probe), target=health.describe(probe))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
