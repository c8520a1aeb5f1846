# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_failure
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The phase and cause of a failed host's turn in a rollout
description:
  - Used in the rescue of a rollout playbook's host turn, with the failed task's result (C(ansible_failed_result)).
  - The phase is the rollout step the playbook noted before running it (O(phase), such as C(preflight), C(drain),
    C(upgrade), C(verify), C(undrain)), followed by C(/) and the phase the failed module reports in its
    C(failed_phase) return value (such as C(health) from C(graceful.gunicorn.gunicorn_upgrade)), when it reports
    one. Task names play no part.
  - The message names the failed task and carries the first lines of the result's C(msg) (else its C(stderr)),
    and the last line when there are more.
options:
  _input:
    description: The failed task's result, C(ansible_failed_result).
    type: dict
    required: true
  phase:
    description: The rollout step that was running.
    type: str
    required: true
  task:
    description: The failed task's name, for the message.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Note the failure
  ansible.builtin.set_fact:
    failure: >-
      {{ ansible_failed_result | graceful.gunicorn.rollout_failure(current_phase, task=ansible_failed_task.name) }}

# {"failed": true, "failed_phase": "health", "msg": "..."} | graceful.gunicorn.rollout_failure("upgrade")
#   -> {"phase": "upgrade/health", "message": "..."}
"""

RETURN = r"""
_value:
  description: The failure.
  type: dict
  contains:
    phase:
      description: The step, and the module's own phase after a C(/) when it names one.
      type: str
    message:
      description: The failed task and what it said, on one line, at most about 700 characters.
      type: str
"""

import re
from collections.abc import Mapping

from ansible.module_utils.common.text.converters import to_text

# A module's failed_phase is a short identifier; anything else is not taken as one.
PHASE_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
FIRST_LINES = 3
FIRST_CHARS = 300
LAST_CHARS = 300


def shorten(value, limit):
    return value if len(value) <= limit else value[: limit - 3] + "..."


def rollout_failure(result, phase, task=""):
    result = result if isinstance(result, Mapping) else {}
    step = result.get("failed_phase")
    phase = to_text(phase or "unknown").strip() or "unknown"
    if isinstance(step, str) and PHASE_RE.fullmatch(step):
        phase = "%s/%s" % (phase, step)
    said = result.get("msg") or result.get("stderr") or ("unreachable" if result.get("unreachable") else "failed")
    lines = [line.strip() for line in to_text(said).splitlines() if line.strip()]
    text = shorten(" ".join(lines[:FIRST_LINES]), FIRST_CHARS)
    if len(lines) > FIRST_LINES:
        text += " [...] " + shorten(lines[-1], LAST_CHARS)
    task = to_text(task or "").strip()
    return {"phase": phase, "message": "%s: %s" % (task, text) if task else text}


class FilterModule(object):
    def filters(self):
        return {"rollout_failure": rollout_failure}
