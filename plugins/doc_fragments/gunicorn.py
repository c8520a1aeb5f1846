# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  instance:
    description:
      - Name of the gunicorn instance as laid out by the P(graceful.gunicorn.server#role) role.
      - Lowercase letters, digits, C(_) and C(-), starting with a letter or digit, at most 40 characters.
      - Derives O(unit=gunicorn-<instance>.service), O(pidfile=/run/gunicorn-<instance>/master.pid) and
        O(config=/etc/gunicorn/<instance>/gunicorn.conf.py) unless those are given.
      - The role writes an instance manifest, C(instance.json), beside the config. When it is readable, options
        left unset are taken from it, the health target (O(health_url) or O(health_socket), O(health_path),
        O(url_prefix), O(expected_status)) and O(workers) included, so the instance name is all a task needs.
      - A manifest that exists must be a regular file owned by root and writable by root only, in directories only
        root can write; otherwise the module fails before acting.
      - One of O(instance), O(pidfile) or O(unit) is required.
    type: str
  pidfile:
    description:
      - The master's pidfile (gunicorn's C(pidfile) setting). During a binary upgrade the new master writes
        C(<pidfile>.2).
      - The PID it names must be a running gunicorn master for this instance; a pidfile whose PID is gone or now
        belongs to another process is an error, never signalled.
      - The pidfile's directory belongs to the service user, so its content is checked, never trusted. A pidfile
        that is a symlink is refused. Under a loaded systemd unit the master is the unit's C(MainPID), and a
        pidfile naming another PID is refused.
      - The PID in C(<pidfile>.2) is taken as the second master of an upgrade only when it is a child of the
        verified master, with its user, in the unit's cgroup, running the release's interpreter; any other PID
        there is refused, never signalled, and the module fails naming it.
    type: path
  unit:
    description:
      - The systemd unit running the master (a C(.service) name). When it is loaded, the master must be its
        C(MainPID), inside its C(ControlGroup); workers and a second master must be in that cgroup too. Its
        C(MainPID) is checked again after a binary upgrade.
      - When the host has no systemd or the unit is not loaded, unit checks are skipped and the result says so
        in C(unit.reason); the pidfile and the process tree are then all the identity there is.
    type: str
  config:
    description:
      - The gunicorn configuration file the master must run. The master's command line must name it with an
        absolute C(-c)/C(--config); a master whose command line does not show its config (no C(-c), or a custom
        process title) is accepted only as the C(MainPID) of a loaded unit, inside the unit's cgroup.
    type: path
  arbiter:
    description:
      - Which master the instance runs.
      - V(graceful) is the bundled C(graceful-gunicorn) arbiter (WINCH drains workers, the main PID is handed to
        the new master, bad workers are kept from taking the server down).
      - V(stock) is plain gunicorn, driven through signals and /proc only, with fewer guarantees.
      - V(auto) picks from the master's command line.
    type: str
    choices: [auto, graceful, stock]
    default: auto
  control_socket:
    description:
      - The bundled arbiter's status and refresh channel (a unix socket). When unset or unreachable the modules
        fall back to signals and /proc.
      - The socket lies in a directory the service user owns, so what it reports is used for readiness only; a
        PID it names is never signalled.
    type: path
  health_url:
    description:
      - Base URL of the app over TCP, for example V(http://127.0.0.1:8000). The request path is the URL's own
        path, then O(url_prefix), then O(health_path).
      - Without O(health_url) and O(health_socket), and no health target in the instance manifest, no health
        check is made and the results say so.
    type: str
  health_socket:
    description:
      - Unix socket the app listens on, probed with plain HTTP instead of O(health_url).
    type: path
  health_path:
    description:
      - Path of the health endpoint.
      - Defaults to the instance manifest's, else V(/health).
    type: str
  url_prefix:
    description:
      - Path prefix the app is mounted under, put before O(health_path).
      - Defaults to the instance manifest's, else none.
    type: str
  host_header:
    description:
      - Host header to send with health requests.
    type: str
  expected_status:
    description:
      - HTTP statuses that count as healthy.
      - Defaults to the instance manifest's, else V([200]).
    type: list
    elements: int
  body_pattern:
    description:
      - Regular expression the response body must match (Python C(re.search)).
    type: str
  validate_certs:
    description:
      - Verify the TLS certificate of an V(https) O(health_url).
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle to verify the health endpoint's certificate with.
    type: path
  health_timeout:
    description:
      - Seconds one health request may take.
    type: float
    default: 5.0
  health_checks:
    description:
      - Consecutive successful health requests needed to call the app healthy.
    type: int
    default: 3
  timeout:
    description:
      - Deadline in seconds of each waiting phase (for example new workers getting ready, old workers draining).
    type: float
    default: 120.0
  worker_ready_seconds:
    description:
      - A worker counts as ready once it has run its main loop (its gunicorn heartbeat, read from /proc) and has
        been alive this many seconds.
    type: float
    default: 1.0
  workers:
    description:
      - Number of workers a generation must have to be ready. Defaults to the number the master runs before the
        action; set it when a release changes the worker count.
    type: int
notes:
  - Runs on the managed host, needs Linux /proc and only the Python standard library; it does not need gunicorn
    on the controller.
  - Read other users' worker details (heartbeat, PSS) needs root or the service user; without them readiness falls
    back to worker age plus the health check.
"""
