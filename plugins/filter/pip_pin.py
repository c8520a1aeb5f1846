# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: pip_pin
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The version a pip requirement pins exactly
description:
  - Parses a pip requirement as pip does (PEP 508, with the C(packaging) library that ansible-core depends on) and
    returns the version of its exact pin (C(==) or C(===)), or an empty string.
  - Extras, environment markers and other specifiers around the pin are allowed
    (C(myapp[redis]==1.2.3,<2; python_version>"3.8") pins C(1.2.3)).
  - A wildcard (C(==1.*)), two different pins, a direct URL (C(myapp @ https://...)), a path, a non-string and
    a line that is not a requirement pin nothing.
  - The server role names the release directory after this pin when C(gunicorn_release) is not set (the
    C(graceful.gunicorn.release_name) filter), and the upgrade playbook's checks compare it with the release.
options:
  _input:
    description: One pip requirement, such as an item of C(gunicorn_app_packages).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Show the version the first app package pins
  ansible.builtin.debug:
    msg: "{{ gunicorn_app_packages[0] | graceful.gunicorn.pip_pin | default('no pin', true) }}"

# "myapp==1.2.3"                            ->  "1.2.3"
# "myapp[redis] == 1.2.3 ; python_version>'3.8'"  ->  "1.2.3"
# "myapp>=1.2"                              ->  ""
# "myapp==1.*"                              ->  ""
"""

RETURN = r"""
_value:
  description: The pinned version as written in the requirement, or an empty string when nothing is pinned exactly.
  type: str
"""

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import pinned_version


def pip_pin(requirement):
    return pinned_version(requirement)


class FilterModule(object):
    def filters(self):
        return {"pip_pin": pip_pin}
