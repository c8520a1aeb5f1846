# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: release_name
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The release directory name the server role uses
description:
  - Returns the given release when it is not empty, else the version the first app package pins (C(name==1.2.3))
    or the version in a wheel file name (C(name-1.2.3-py3-none-any.whl)), else an empty string.
  - The same function feeds the role's checks (the C(graceful.gunicorn.instance_problems) filter), so the name the
    role uses for paths is the name that was checked.
options:
  _input:
    description: the role variable C(gunicorn_release), possibly empty.
    type: raw
    required: true
  packages:
    description: the role variable C(gunicorn_app_packages).
    type: raw
    required: true
"""

EXAMPLES = r"""
# "" | graceful.gunicorn.release_name(["myapp==1.2.3"])  ->  "1.2.3"
# "hotfix-1" | graceful.gunicorn.release_name(["myapp==1.2.3"])  ->  "hotfix-1"
"""

RETURN = r"""
_value:
  description: The release name, or an empty string when none can be told.
  type: str
"""

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import release_of


def release_name(release, packages):
    return release_of(release, packages)


class FilterModule(object):
    def filters(self):
        return {"release_name": release_name}
