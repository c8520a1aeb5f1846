# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: release_keep_list
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The releases an instance keeps when old ones are removed
description:
  - Given the finished releases of an instance, newest first (a release is finished once a master ran it and passed
    its health check), returns the release names that must stay on the host.
  - Kept are the newest O(keep) finished releases, the release the running master uses (O(master)), the release the
    C(current) link names (O(current)), and the newest finished release other than the master's, which is what a
    rollback goes back to. Every other release directory may be removed.
  - Empty names are left out; the result is sorted and has no duplicates.
options:
  _input:
    description: Names of the finished releases, newest first.
    type: list
    elements: str
    required: true
  keep:
    description: How many of the newest finished releases to keep (C(gunicorn_keep_releases)), at least 1.
    type: int
    required: true
  master:
    description: The release the running master uses; empty when unknown.
    type: str
    default: ""
  current:
    description: The release the instance's C(current) link names; empty when there is no link.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Remove releases beyond the ones kept
  vars:
    keep_list: >-
      {{ finished_newest_first | graceful.gunicorn.release_keep_list(gunicorn_keep_releases, master=master_release,
         current=current_release) }}
  ansible.builtin.file:
    path: "{{ releases_dir }}/{{ item }}"
    state: absent
  loop: "{{ release_dirs | reject('in', keep_list) | list }}"

# ["4", "3", "2", "1"] | graceful.gunicorn.release_keep_list(2, master="4", current="4")  ->  ["3", "4"]
# ["4", "3", "2", "1"] | graceful.gunicorn.release_keep_list(1, master="2", current="2")  ->  ["2", "4"]
"""

RETURN = r"""
_value:
  description: The names of the releases to keep, sorted.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text


def release_keep_list(finished, keep, master="", current=""):
    if isinstance(finished, (str, bytes)) or not hasattr(finished, "__iter__"):
        raise AnsibleFilterError("release_keep_list: the input must be a list of release names, got %r" % (finished,))
    if isinstance(keep, bool):
        raise AnsibleFilterError("release_keep_list: keep must be a whole number of at least 1, got %r" % (keep,))
    try:
        count = int(keep)
    except (TypeError, ValueError):
        raise AnsibleFilterError(
            "release_keep_list: keep must be a whole number of at least 1, got %r" % (keep,)
        ) from None
    if count < 1:
        raise AnsibleFilterError("release_keep_list: keep must be at least 1, got %d" % count)
    names = [to_text(name) for name in finished if name is not None and to_text(name) != ""]
    master = to_text(master or "")
    current = to_text(current or "")
    rollback_target = next((name for name in names if name != master), "")
    kept = set(names[:count]) | {master, current, rollback_target}
    kept.discard("")
    return sorted(kept)


class FilterModule(object):
    def filters(self):
        return {"release_keep_list": release_keep_list}
