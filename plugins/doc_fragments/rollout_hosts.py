# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The options of the rollout filters that read every targeted host's outcome from hostvars.
    DOCUMENTATION = r"""
options:
  _input:
    description: The hosts' variables, normally C(hostvars).
    type: dict
    required: true
  hosts:
    description: The hosts the rollout targets (all batches), normally C(ansible_play_hosts_all).
    type: list
    elements: str
    required: true
"""
