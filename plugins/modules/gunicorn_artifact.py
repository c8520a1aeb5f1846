#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gunicorn_artifact
short_description: Pack a wheelhouse once on the controller, unpack and verify it on each host
version_added: 0.1.0
description:
  - A release's wheels travel as one artifact, C(wheelhouse-<digest>.tar), instead of one copy per file. It holds
    the distributions at the top of the wheelhouse and a C(SHA256SUMS) manifest in C(sha256sum) format, and it is
    reproducible, so the same wheels give the same file and a host that holds it already is sent nothing.
  - With O(state=built), run on the controller (C(delegate_to=localhost)), it writes the artifact into
    O(cache_dir) unless it is there already.
  - With O(state=unpacked), run on a host, it checks the artifact's sha256 against the one the controller
    packed, unpacks it beside O(dest) checking every file against the manifest as it is written (the files are
    streamed, never held in memory), and replaces O(dest) with them by a rename. Projects of which no file fits
    the host's interpreter are listed in RV(unfit), for the message when pip then finds nothing to install.
  - The P(graceful.gunicorn.server#role) role sends a controller wheelhouse (C(gunicorn_wheelhouse)) this way.
    Members that are not plain distribution files, links among them, are refused, never followed.
author:
  - graceful.gunicorn maintainers (@graceful-gunicorn)
options:
  state:
    description:
      - V(built) packs O(src) on the machine the task runs on; V(unpacked) verifies O(path) and unpacks it into
        O(dest).
    type: str
    required: true
    choices: [built, unpacked]
  src:
    description:
      - The wheelhouse directory. Its wheels (C(*.whl)) and source archives (C(*.tar.gz), C(*.zip)) at the top
        level are packed, as pip's C(--find-links) reads them; other entries are skipped and listed in
        RV(skipped).
      - Required with O(state=built).
    type: path
  cache_dir:
    description:
      - Where the artifact is written, created with mode C(0700) if missing. Artifacts are named by content, so
        the directory can be shared by runs.
      - Required with O(state=built).
    type: path
  path:
    description:
      - The artifact on the host. Required with O(state=unpacked).
    type: path
  sha256:
    description:
      - The artifact's sha256 as O(state=built) returned it (RV(sha256)). Required with O(state=unpacked).
    type: str
  dest:
    description:
      - The directory to hold the unpacked wheelhouse, replaced as a whole when it differs. Its parent must
        exist. A symbolic link there is refused. Required with O(state=unpacked).
    type: path
  python:
    description:
      - The interpreter the wheels are for. When given, the projects of which no file fits its tags
        (implementation, version, ABI, architecture, glibc) are listed in RV(unfit). They are not an error by
        themselves, since pip may not need them on this host.
    type: path
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details:
      - With O(state=unpacked), an artifact not yet on the host is reported as a change.
      - With O(state=built), the artifact is written in check mode too; it changes only the controller's cache
        and the tasks after it read the file.
  diff_mode:
    description: Returns no diff.
    support: none
"""

EXAMPLES = r"""
- name: Pack the wheelhouse on the controller
  delegate_to: localhost
  become: false
  graceful.gunicorn.gunicorn_artifact:
    state: built
    src: "{{ playbook_dir }}/wheelhouse"
    cache_dir: "~/.cache/graceful-gunicorn/artifacts"
  register: artifact

- name: Copy it to the host
  ansible.builtin.copy:
    src: "{{ artifact.path }}"
    dest: "/srv/gunicorn/shop/artifacts/{{ artifact.name }}"
    mode: "0644"

- name: Verify and unpack it
  graceful.gunicorn.gunicorn_artifact:
    state: unpacked
    path: "/srv/gunicorn/shop/artifacts/{{ artifact.name }}"
    sha256: "{{ artifact.sha256 }}"
    dest: /srv/gunicorn/shop/wheelhouse
    python: /usr/bin/python3
"""

RETURN = r"""
path:
  description: The artifact (O(state=built)) or O(path).
  returned: always
  type: str
  sample: /root/.cache/graceful-gunicorn/artifacts/wheelhouse-3f2a9c0d4b5e6f70.tar
name:
  description: The artifact's file name, C(wheelhouse-<first 16 hex digits of the manifest's sha256>.tar).
  returned: always
  type: str
  sample: wheelhouse-3f2a9c0d4b5e6f70.tar
sha256:
  description: The artifact's sha256.
  returned: always
  type: str
  sample: 9b74c9897bac770ffc029102a200c5de3b1c6c2f8e3c4b3c1b9a0f7e6d5c4b3a
distributions:
  description: The distribution files the artifact holds.
  returned: always
  type: list
  elements: str
  sample: [gunicorn-27.0.1-py3-none-any.whl, shop-2.4.1-py3-none-any.whl]
skipped:
  description: Entries of O(src) that were not packed (O(state=built)); empty otherwise.
  returned: always
  type: list
  elements: str
  sample: [README.txt]
unfit:
  description: Projects of the artifact of which no file fits O(python), when given (O(state=unpacked)).
  returned: always
  type: list
  elements: str
  sample: [numpy]
host_python:
  description: The interpreter O(python) as the check saw it, or null.
  returned: always
  type: str
  sample: cpython 3.11 on x86_64, glibc 2.36
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_artifact as artifact

# Run by the target interpreter: the facts wheel tags are matched against.
HOST_FACTS = (
    "import json, platform, sys; libc, ver = platform.libc_ver(); "
    "print(json.dumps(dict(implementation=sys.implementation.name, major=sys.version_info[0], "
    "minor=sys.version_info[1], machine=platform.machine(), "
    "glibc=[int(x) for x in ver.split('.')[:2]] if libc == 'glibc' and ver else None)))"
)


def host_facts(module, python):
    rc, out, err = module.run_command([python, "-I", "-c", HOST_FACTS])
    if rc != 0:
        module.fail_json(msg="python (%s) did not run: %s" % (python, (err or out).strip()[-500:]))
    return json.loads(out)


def build(module):
    try:
        result = artifact.build(module.params["src"], module.params["cache_dir"])
    except (artifact.ArtifactError, OSError) as exc:
        module.fail_json(msg="state=built: %s" % exc)
    result.pop("manifest")
    module.exit_json(host_python=None, unfit=[], **result)


def unpack(module):
    params = module.params
    path, dest = params["path"], params["dest"]
    if not artifact.SHA256_RE.match(params["sha256"]):
        module.fail_json(
            msg="sha256 (%r) is not 64 lowercase hex digits: pass the sha256 state=built returned" % params["sha256"]
        )
    if not artifact.ARTIFACT_RE.match(path.rsplit("/", 1)[-1]):
        module.fail_json(msg="path (%s) is not named wheelhouse-<16 hex>.tar, as state=built names it" % path)
    base = dict(path=path, name=path.rsplit("/", 1)[-1], sha256=params["sha256"], skipped=[], host_python=None)
    try:
        manifest, digests = artifact.inspect_artifact(path, params["sha256"])
    except FileNotFoundError:
        if module.check_mode:
            module.exit_json(
                changed=True, distributions=[], unfit=[], msg="the artifact is not on the host yet", **base
            )
        module.fail_json(msg="path (%s) does not exist: copy the artifact first" % path, **base)
    except (artifact.ArtifactError, OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=str(exc), **base)
    names = sorted(digests)
    unfit = []
    if params["python"]:
        facts = host_facts(module, params["python"])
        base["host_python"] = artifact.describe_host(facts)
        unfit = artifact.unfit_projects(names, facts)
    if artifact.unpacked_matches(dest, manifest):
        module.exit_json(changed=False, distributions=names, unfit=unfit, **base)
    if not module.check_mode:
        try:
            artifact.replace_directory(dest, path, digests)
        except (artifact.ArtifactError, OSError) as exc:
            module.fail_json(msg="dest (%s): %s" % (dest, exc), **base)
    module.exit_json(changed=True, distributions=names, unfit=unfit, **base)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["built", "unpacked"]),
            src=dict(type="path"),
            cache_dir=dict(type="path"),
            path=dict(type="path"),
            sha256=dict(type="str"),
            dest=dict(type="path"),
            python=dict(type="path"),
        ),
        required_if=[
            ("state", "built", ("src", "cache_dir")),
            ("state", "unpacked", ("path", "sha256", "dest")),
        ],
        mutually_exclusive=[("src", "path"), ("cache_dir", "dest")],
        supports_check_mode=True,
    )
    if module.params["state"] == "built":
        build(module)
    else:
        unpack(module)


if __name__ == "__main__":
    main()
