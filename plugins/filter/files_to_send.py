# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: files_to_send
author: graceful.gunicorn contributors
version_added: 0.3.0
short_description: Which files of a controller tree a host lacks, and which of the host's files the tree no longer has
description:
  - Compares the files of a tree on the controller with the files of its copy on a host, both as listed by
    M(ansible.builtin.find) with O(ansible.builtin.find#module:get_checksum=true), and says what a copy must do.
  - With O(mode=send) (the default), returns one item per controller file that the host lacks or holds with another
    checksum, with C(src) (the controller path), C(dest) (the path on the host) and C(rel) (the path inside the
    tree), sorted by C(rel). An up-to-date host gets an empty list, so the copy task that loops over it makes no
    round trip at all.
  - With O(mode=stale), returns the host paths whose relative path the controller tree does not have, sorted.
  - With O(mode=dirs), returns the directories, relative to the tree and shortest first, that the files to send
    need; the tree's own root is left out.
  - Paths are compared normalised (C(a/../b) is C(b)); a path that is not under its root is refused.
options:
  _input:
    description: The controller tree's files, the C(files) list of an M(ansible.builtin.find) result.
    type: list
    elements: dict
    required: true
  host_files:
    description: The host copy's files, the C(files) list of an M(ansible.builtin.find) result.
    type: list
    elements: dict
    required: true
  src_root:
    description: The tree's root on the controller.
    type: str
    required: true
  dest_root:
    description: The copy's root on the host.
    type: str
    required: true
  mode:
    description: What to return.
    type: str
    choices: [send, stale, dirs]
    default: send
"""

EXAMPLES = r"""
- name: Copy the wheels the host lacks
  ansible.builtin.copy:
    src: "{{ item.src }}"
    dest: "{{ item.dest }}"
    mode: "0644"
  loop: >-
    {{ controller_find.files | graceful.gunicorn.files_to_send(host_find.files, src_root=wheelhouse,
       dest_root=host_wheelhouse) }}
  loop_control:
    label: "{{ item.rel }}"

# [{path: /w/a.whl, checksum: "1"}, {path: /w/b.whl, checksum: "2"}]
#   | files_to_send([{path: /h/a.whl, checksum: "1"}, {path: /h/old.whl, checksum: "3"}], src_root="/w", dest_root="/h")
#   -> [{src: /w/b.whl, dest: /h/b.whl, rel: b.whl}]      (mode=stale: ["/h/old.whl"])
"""

RETURN = r"""
_value:
  description: >-
    With O(mode=send), the files to copy (dicts with C(src), C(dest) and C(rel)); with O(mode=stale), the host
    paths to remove; with O(mode=dirs), the relative directories to create.
  type: list
  elements: raw
"""

import posixpath

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

MODES = ("send", "stale", "dirs")


def _relative(path, root, side):
    path = to_text(path)
    # find reports paths as it was given them ("roles/server/../../wheels/..."): compare them normalised
    root = posixpath.normpath(to_text(root))
    prefix = root if root.endswith("/") else root + "/"
    normal = posixpath.normpath(path)
    if not normal.startswith(prefix):
        raise AnsibleFilterError("files_to_send: the %s file %r is not under %r" % (side, path, root))
    return normal[len(prefix) :]


def _by_relative(files, root, side):
    if isinstance(files, (str, bytes, dict)) or not hasattr(files, "__iter__"):
        raise AnsibleFilterError("files_to_send: the %s files must be a list of find results, got %r" % (side, files))
    listed = {}
    for entry in files:
        if not isinstance(entry, dict) or "path" not in entry:
            raise AnsibleFilterError("files_to_send: a %s entry has no path: %r" % (side, entry))
        listed[_relative(entry["path"], root, side)] = entry
    return listed


def files_to_send(files, host_files, src_root, dest_root, mode="send"):
    if mode not in MODES:
        raise AnsibleFilterError("files_to_send: mode must be one of %s, got %r" % (", ".join(MODES), mode))
    local = _by_relative(files, src_root, "controller")
    remote = _by_relative(host_files, dest_root, "host")
    dest_root = posixpath.normpath(to_text(dest_root))
    if mode == "stale":
        return sorted(entry["path"] for rel, entry in remote.items() if rel not in local)
    sent = []
    for rel in sorted(local):
        checksum = local[rel].get("checksum")
        if not checksum:
            raise AnsibleFilterError(
                "files_to_send: no checksum for %r: list it with get_checksum" % local[rel]["path"]
            )
        if rel in remote and remote[rel].get("checksum") == checksum:
            continue
        sent.append({"src": to_text(local[rel]["path"]), "dest": dest_root + "/" + rel, "rel": rel})
    if mode == "dirs":
        needed = set()
        for item in sent:
            parent = posixpath.dirname(item["rel"])
            while parent:
                needed.add(parent)
                parent = posixpath.dirname(parent)
        return sorted(needed, key=lambda name: (name.count("/"), name))
    return sent


class FilterModule(object):
    def filters(self):
        return {"files_to_send": files_to_send}
