# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: change_action
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The one action that applies every change of a server role run, least disruptive first
description:
  - Used by the server role once per run, after all its tasks have recorded what they changed.
  - New code (release, venv, arbiter, gunicorn or Python version) is applied by an upgrade (SIGUSR2), which also
    applies the configuration and the environment (the new master reads both).
  - A changed C(gunicorn.conf.py) is applied by a reload (HUP). A changed environment file is applied by a reload
    when the app is not preloaded (the new workers get the new environment), by an upgrade when it is (a preloaded
    app was imported in the master with the old environment).
  - A changed service unit, a changed set of socket units, a move to socket activation, or a restart left pending
    by an earlier run need a restart, which applies everything else as well. With O(restart_mode=deferred) the
    restart is left to the caller (the deploy playbook restarts the hosts one at a time), and the other changes are
    applied now, by the action they would need without the unit change, and RV(_value.restart_pending) says that
    the restart is still owed.
  - A service that was not active is started by the role itself, which applies everything; the action is V(none).
options:
  _input:
    description:
      - What changed, by kind; missing kinds did not change.
      - Kinds are C(unit), C(sockets), C(adopt) (socket activation is new to the running service), C(environment),
        C(config), C(code) and C(manifest) (the instance manifest alone, which needs no action).
    type: dict
    required: true
  preload_app:
    description: Whether the app is preloaded in the master.
    type: bool
    required: true
  was_active:
    description: Whether the service was active before the run.
    type: bool
    required: true
  restart_pending:
    description: Whether an earlier run left a restart pending (its marker file exists).
    type: bool
    default: false
  restart_mode:
    description: V(immediate) restarts now; V(deferred) leaves the restart to the caller.
    type: str
    default: immediate
    choices: [immediate, deferred]
"""

EXAMPLES = r"""
# {"environment": true} | graceful.gunicorn.change_action(preload_app=false, was_active=true)
#   -> {"action": "reload", "restart_pending": false, "reasons": ["environment"]}
# {"unit": true, "code": true} | graceful.gunicorn.change_action(preload_app=true, was_active=true,
#                                                                 restart_mode="deferred")
#   -> {"action": "upgrade", "restart_pending": true, "reasons": ["unit", "code"]}
"""

RETURN = r"""
_value:
  description: The decision.
  type: dict
  contains:
    action:
      description: V(none), V(reload), V(upgrade) or V(restart).
      type: str
    restart_pending:
      description: Whether a restart is still owed after the action (the role keeps its marker file then).
      type: bool
    reasons:
      description: The kinds that changed (plus C(pending) for an earlier run's restart), in a fixed order.
      type: list
      elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

KINDS = ("unit", "sockets", "adopt", "environment", "config", "code", "manifest")
RESTART_KINDS = ("unit", "sockets", "adopt")
MODES = ("immediate", "deferred")


def _flag(name, value):
    if isinstance(value, bool):
        return value
    raise AnsibleFilterError("change_action: %s must be a boolean, not %r" % (name, value))


def change_action(changes, preload_app, was_active, restart_pending=False, restart_mode="immediate"):
    """The action (none, reload, upgrade, restart) that applies ``changes`` with the least disruption."""
    if not isinstance(changes, Mapping):
        raise AnsibleFilterError("change_action: the input must be a mapping of change kinds to booleans")
    unknown = sorted(str(key) for key in changes if key not in KINDS)
    if unknown:
        raise AnsibleFilterError(
            "change_action: unknown change kind(s) %s; known: %s" % (", ".join(unknown), ", ".join(KINDS))
        )
    changed = dict((kind, _flag(kind, changes.get(kind, False))) for kind in KINDS)
    preload_app = _flag("preload_app", preload_app)
    was_active = _flag("was_active", was_active)
    restart_pending = _flag("restart_pending", restart_pending)
    if restart_mode not in MODES:
        raise AnsibleFilterError("change_action: restart_mode must be immediate or deferred, not %r" % (restart_mode,))

    reasons = [kind for kind in KINDS if changed[kind]] + (["pending"] if restart_pending else [])
    if not was_active:
        # The role starts the service with everything in place; nothing is owed afterwards.
        return {"action": "none", "restart_pending": False, "reasons": reasons}

    needs_restart = restart_pending or any(changed[kind] for kind in RESTART_KINDS)
    if needs_restart and restart_mode == "immediate":
        return {"action": "restart", "restart_pending": False, "reasons": reasons}

    if changed["code"] or (changed["environment"] and preload_app):
        action = "upgrade"
    elif changed["config"] or changed["environment"]:
        action = "reload"
    else:
        action = "none"
    return {"action": action, "restart_pending": needs_restart, "reasons": reasons}


class FilterModule(object):
    def filters(self):
        return {"change_action": change_action}
