# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side checks of the server role's and the rollout playbooks' variables.

Every value that reaches a systemd unit, a path, a shell command line or a Python file is checked here, on
the controller, before any host is contacted. Each check matches the WHOLE value (re.fullmatch): a `$` in
a Python pattern also matches before a trailing newline, and systemd reads a carriage return as a line end,
so a partial match would let `root\\n` or `app\\rUser=root` through.

Each problem is one sentence that starts with the variable's name, says what is wrong with the value
and how to fix it. The checks only read their input; nothing here touches a host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import math
import os
import posixpath
import re
import stat
from collections.abc import Mapping

from ansible_collections.graceful.gunicorn.plugins.module_utils.gunicorn_settings import unknown_settings

# ---------------------------------------------------------------------------------------------------------
# Grammar

INSTANCE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
# useradd's default NAME_REGEX, at most 32 characters.
ACCOUNT_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
DOTTED = IDENTIFIER + r"(?:\." + IDENTIFIER + r")*"
# Factory arguments: only literals that need neither quotes nor spaces in ExecStart= (ints, True, False,
# None), positional or as keyword=literal. String arguments would need quoting: wrap the call in a module
# attribute instead.
APP_LITERAL = r"(?:-?[0-9]{1,18}|True|False|None)"
APP_ARGUMENT = r"(?:" + IDENTIFIER + r"=)?" + APP_LITERAL
APP_RE = re.compile(
    r"(?P<module>" + DOTTED + r")(?::(?P<name>" + IDENTIFIER + r")"
    r"(?:\((?:" + APP_ARGUMENT + r"(?:," + APP_ARGUMENT + r")*)?\))?)?"
)
ENV_NAME_RE = re.compile(IDENTIFIER)
RELEASE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
VERSION_RE = re.compile(r"[0-9]+(?:\.[0-9A-Za-z]+){0,5}")
# Path characters allowed anywhere a path reaches the unit, a command line or the manifest: no space,
# quote, %, $, backslash or control character, so nothing needs escaping or quoting.
SAFE_PATH_RE = re.compile(r"(?:/[A-Za-z0-9_][A-Za-z0-9._+-]{0,254})+")
URL_PREFIX_RE = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
HEALTH_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]{0,254}(?:\?[A-Za-z0-9._~=&-]{0,254})?")
TCP_BIND_RE = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|)"
    r":(?P<port>[0-9]{1,5})"
)
IPV4_RE = re.compile(
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
)
UNIX_BIND_RE = re.compile(r"unix:(?P<path>/.*)", re.S)
URL_RE = re.compile(r"https?://[A-Za-z0-9._~:/?#@!&'()*+,;=%\[\]-]{1,2000}")
# One requirement or path for pip, passed as one quoted argument. A leading '-' would be a pip option.
PACKAGE_RE = re.compile(r"[A-Za-z0-9_./~\[][A-Za-z0-9_.,;:/~@+=<>!*\[\]() -]{0,499}")
PYTHON_RE = re.compile(r"/(?:usr|opt)(?:/[A-Za-z0-9_][A-Za-z0-9._+-]{0,254})*/python[0-9.]{0,8}")
# A unit line of gunicorn_unit_extra: Key=value, no control character, no backslash (a trailing one
# would continue the line into the next directive).
UNIT_LINE_RE = re.compile(r"(?P<key>[A-Z][A-Za-z0-9]{1,63})=(?P<value>[ -\[\]-~]{0,1000})")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Groups that would give the service (and so the app's code) more than a socket: administration,
# raw disks and memory, terminals, the journal, container engines, logs and devices.
DANGEROUS_GROUPS = frozenset(
    """root wheel sudo admin adm shadow disk kmem mem tty docker lxd libvirt libvirt-qemu kvm
    systemd-journal systemd-network systemd-resolve systemd-timesync staff operator utmp input uucp
    dialout floppy cdrom tape audio video render plugdev netdev bluetooth sgx ssl-cert crontab mail
    messagebus polkitd _ssh sys bin daemon users nogroup lp src""".split()  # noqa: SIM905
)
# Top-level directories that a service's writable paths must not be in (nor may they be top-level).
SYSTEM_TREES = frozenset(
    "proc sys dev boot bin sbin lib lib32 lib64 libx32 usr etc root lost+found".split()  # noqa: SIM905
)
# Bases the role creates directories in and removes <base>/<instance> from: at least two components, not
# in the system trees above, not a world-writable directory nor a known system directory.
BASE_REFUSED_TREES = frozenset(
    """proc sys dev boot bin sbin lib lib32 lib64 libx32 usr root home tmp lost+found""".split()  # noqa: SIM905
)
BASE_REFUSED = frozenset(
    """/etc/systemd /etc/ssh /etc/sudoers.d /etc/pam.d /etc/cron.d /etc/cron.daily /etc/cron.hourly
    /etc/cron.weekly /etc/cron.monthly /etc/init.d /etc/default /etc/security /etc/apt /etc/ssl
    /etc/profile.d /etc/network /etc/sysctl.d /etc/modprobe.d /etc/udev /etc/logrotate.d
    /etc/ld.so.conf.d /etc/polkit-1 /etc/dbus-1 /etc/tmpfiles.d /etc/environment.d /etc/alternatives
    /etc/skel /usr/bin /usr/sbin /usr/lib /usr/lib64 /usr/libexec /usr/share /usr/include /usr/src
    /usr/local /usr/local/bin /usr/local/sbin /usr/local/lib /usr/local/share /usr/local/etc /var/lib
    /var/log /var/spool /var/cache /var/backups /var/mail /var/tmp /var/run /var/lock /var/local
    /var/opt /var/www /run/user /run/systemd /run/lock /srv/www /opt/local""".split()  # noqa: SIM905
)
# ... and trees whose every directory matters to root (configuration read by systemd, sshd, sudo, PAM, cron).
BASE_REFUSED_WITHIN = frozenset(
    """/etc/systemd /etc/ssh /etc/sudoers.d /etc/pam.d /etc/cron.d /etc/cron.daily /etc/cron.hourly
    /etc/cron.weekly /etc/cron.monthly /etc/init.d /etc/security /etc/apt /etc/profile.d /etc/sysctl.d
    /etc/modprobe.d /etc/udev /etc/ld.so.conf.d /etc/polkit-1 /etc/dbus-1 /etc/tmpfiles.d
    /etc/environment.d /run/systemd /run/user /var/spool/cron""".split()  # noqa: SIM905
)
# gunicorn_unit_extra keys: resource limits, scheduling, timeouts and logging. Identity, privileges,
# commands and the sandbox are the role's: a line such as User=root or ExecStartPre=+... would let a
# variable run code as root.
UNIT_EXTRA_PREFIXES = ("Limit", "CPU", "Memory", "IO", "Tasks", "Startup", "LogRate", "Timeout", "Restart")
UNIT_EXTRA_KEYS = frozenset(
    """Nice OOMScoreAdjust OOMPolicy LogLevelMax LogExtraFields SyslogIdentifier SyslogFacility SyslogLevel
    SyslogLevelPrefix Environment UnsetEnvironment ManagedOOMPreference ManagedOOMMemoryPressure
    ManagedOOMSwap AllowedCPUs AllowedMemoryNodes CoredumpFilter TimerSlackNSec""".split()  # noqa: SIM905
)
UNIT_EXTRA_REFUSED = frozenset("RestartForceExitStatus".split())  # noqa: SIM905

# gunicorn settings the role manages, and what to do instead of setting them in gunicorn_settings.
MANAGED_SETTINGS = {
    "bind": "use gunicorn_bind",
    "workers": "use gunicorn_workers",
    "worker_class": "use gunicorn_worker_class",
    "preload_app": "use gunicorn_preload_app",
    "timeout": "use gunicorn_timeout",
    "graceful_timeout": "use gunicorn_graceful_timeout",
    "max_requests": "use gunicorn_max_requests",
    "max_requests_jitter": "use gunicorn_max_requests_jitter",
    "wsgi_app": "use gunicorn_app",
    "control_socket": "use gunicorn_control_socket_enabled (the path is /run/gunicorn-<instance>/gunicorn.ctl)",
    "control_socket_disable": "use gunicorn_control_socket_enabled",
    "pidfile": "the role sets /run/gunicorn-<instance>/master.pid, which systemd follows",
    "daemon": "systemd runs gunicorn in the foreground",
    "chdir": "gunicorn runs in <gunicorn_root_base>/<instance>/current, the release chosen by gunicorn_release",
    "user": "use gunicorn_user",
    "group": "use gunicorn_group",
    "raw_env": "use gunicorn_environment or gunicorn_secret_environment",
    "config": "the role writes <gunicorn_config_base>/<instance>/gunicorn.conf.py",
    "check_config": "the role checks every configuration before installing it",
    "print_config": "it is a command-line action",
    "reload": "auto-reload is for development; the role reloads the service when something changes",
    "pythonpath": "install the app into the release venv through gunicorn_app_packages",
}
# Settings whose true value breaks the recycling this collection does.
REFUSED_SETTING_VALUES = {
    "reuse_port": "reuse_port = true breaks SIGUSR2 upgrades and drops connections on recycle; leave it off",
}

# Integers: (low, high) per variable. Bounded so that a huge number is a clear refusal, not a crash.
INT_BOUNDS = {
    "gunicorn_workers": (1, 1024),
    "gunicorn_timeout": (1, 86400),
    "gunicorn_graceful_timeout": (1, 86400),
    "gunicorn_max_requests": (0, 10**9),
    "gunicorn_max_requests_jitter": (0, 10**9),
    "gunicorn_health_timeout": (1, 3600),
    "gunicorn_keep_releases": (1, 100),
}
SETTING_INT_LIMIT = 2**63 - 1
MAX_SETTING_TEXT = 65536
MAX_CONFIG_EXTRA = 262144
MAX_ENV_VALUE = 65536
# sun_path is 108 bytes including the terminating NUL.
MAX_UNIX_PATH = 107

BOOL_TRUE = frozenset("true yes on 1 y t".split())  # noqa: SIM905
BOOL_FALSE = frozenset("false no off 0 n f".split())  # noqa: SIM905

RESTART_MODES = ("immediate", "deferred")
# A pure-Python wheel of the arbiter, as flit_core names it: no path separator, no spaces, nothing to quote.
ARBITER_WHEEL_RE = re.compile(r"graceful_gunicorn_arbiter-[0-9][0-9A-Za-z.+_]*-py3-none-any\.whl")

ROLE_VARIABLES = (
    "gunicorn_state",
    "gunicorn_instance",
    "gunicorn_app",
    "gunicorn_app_packages",
    "gunicorn_release",
    "gunicorn_version",
    "gunicorn_worker_class",
    "gunicorn_worker_packages",
    "gunicorn_uvicorn_worker_packages",
    "gunicorn_python",
    "gunicorn_pip_index_url",
    "gunicorn_pip_extra_args",
    "gunicorn_wheelhouse",
    "gunicorn_wheelhouse_remote_src",
    "gunicorn_artifact_cache_dir",
    "gunicorn_arbiter_wheel",
    "gunicorn_arbiter_src",
    "gunicorn_bind",
    "gunicorn_workers",
    "gunicorn_preload_app",
    "gunicorn_timeout",
    "gunicorn_graceful_timeout",
    "gunicorn_max_requests",
    "gunicorn_max_requests_jitter",
    "gunicorn_control_socket_enabled",
    "gunicorn_settings",
    "gunicorn_config_extra",
    "gunicorn_environment",
    "gunicorn_secret_environment",
    "gunicorn_url_prefix",
    "gunicorn_url_prefix_env",
    "gunicorn_health_path",
    "gunicorn_health_check",
    "gunicorn_health_timeout",
    "gunicorn_health_status",
    "gunicorn_bake_seconds",
    "gunicorn_keep_releases",
    "gunicorn_user",
    "gunicorn_group",
    "gunicorn_remove_user",
    "gunicorn_root_base",
    "gunicorn_config_base",
    "gunicorn_socket_group",
    "gunicorn_service_enabled",
    "gunicorn_read_write_paths",
    "gunicorn_memory_deny_write_execute",
    "gunicorn_unit_extra",
    "gunicorn_socket_activation",
    "gunicorn_restart_mode",
)
# The variables an action that does not install (rollback, reload, refresh) reads.
INSTANCE_VARIABLES = (
    "gunicorn_instance",
    "gunicorn_root_base",
    "gunicorn_config_base",
    "gunicorn_health_check",
    "gunicorn_bake_seconds",
    "gunicorn_keep_releases",
)


class Problems(object):
    """Collects one sentence per problem, each starting with the variable's name."""

    def __init__(self):
        self.items = []

    def add(self, name, what, fix=""):
        text = "%s %s" % (name, what)
        if fix:
            text += "; " + fix
        self.items.append(text.rstrip(".") + ".")


def show(value, limit=80):
    """A value as the problem message shows it: JSON, so control characters are visible, and short."""
    if isinstance(value, str):
        value = str.__str__(value)
    try:
        text = json.dumps(value, ensure_ascii=True, sort_keys=True, default=repr)
    except ValueError:
        text = "(a value that cannot be shown)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        text = "(an integer of %d bits)" % value.bit_length()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value):
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a %s" % type(value).__name__


def is_text(value):
    return isinstance(value, str)


def text(value):
    return str.__str__(value)


def is_list(value):
    return isinstance(value, (list, tuple))


# ---------------------------------------------------------------------------------------------------------
# Typed readers: each returns the usable value, or None after recording a problem.


def read_int(problems, name, value, low, high):
    if isinstance(value, bool):
        problems.add(
            name,
            "must be a whole number, got a boolean (%s)" % show(value),
            "give a number from %d to %d" % (low, high),
        )
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"-?[0-9]{1,18}", text(value)):
            problems.add(name, "must be a whole number from %d to %d, got %s" % (low, high, show(value)))
            return None
        value = int(text(value))
    elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if not isinstance(value, int):
        problems.add(name, "must be a whole number from %d to %d, got %s %s" % (low, high, kind(value), show(value)))
        return None
    if not low <= value <= high:
        problems.add(name, "is %s, out of range" % show(value), "give a whole number from %d to %d" % (low, high))
        return None
    return value


def read_number(problems, name, value, low, high):
    if isinstance(value, bool) or value is None:
        problems.add(name, "must be a number from %s to %s, got %s" % (low, high, kind(value)))
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,9}(?:\.[0-9]{1,9})?", text(value)):
            problems.add(name, "must be a number from %s to %s, got %s" % (low, high, show(value)))
            return None
        value = float(text(value))
    if isinstance(value, int) and value.bit_length() > 64:
        problems.add(name, "is %s, out of range" % show(value), "give a number from %s to %s" % (low, high))
        return None
    if not isinstance(value, (int, float)) or math.isnan(value):
        problems.add(name, "must be a number from %s to %s, got %s %s" % (low, high, kind(value), show(value)))
        return None
    if not low <= value <= high:
        problems.add(name, "is %s, out of range" % show(value), "give a number from %s to %s" % (low, high))
        return None
    return value


def read_bool(problems, name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and text(value).lower() in BOOL_TRUE | BOOL_FALSE:
        return text(value).lower() in BOOL_TRUE
    problems.add(name, "must be true or false, got %s %s" % (kind(value), show(value)))
    return None


def read_str(problems, name, value, allow_empty=True):
    if value is None and allow_empty:
        return ""
    if not is_text(value):
        problems.add(name, "must be a string, got %s %s" % (kind(value), show(value)))
        return None
    return text(value)


def read_list(problems, name, value, example):
    """A list; a string is refused by name (a list given as -e 'name=[...]' arrives as a string)."""
    if is_text(value):
        problems.add(
            name,
            "must be a list, got a string (%s)" % show(value),
            "give a YAML or JSON list, e.g. %s (on the command line: -e '{\"%s\": %s}')" % (example, name, example),
        )
        return None
    if not is_list(value):
        problems.add(name, "must be a list, got %s %s" % (kind(value), show(value)), "e.g. %s" % example)
        return None
    return list(value)


def read_mapping(problems, name, value, example):
    if is_text(value):
        problems.add(
            name,
            "must be a mapping, got a string (%s)" % show(value),
            "give a YAML or JSON mapping, e.g. %s (on the command line: -e '{\"%s\": %s}')" % (example, name, example),
        )
        return None
    if not isinstance(value, Mapping):
        problems.add(name, "must be a mapping, got %s %s" % (kind(value), show(value)), "e.g. %s" % example)
        return None
    return value


# ---------------------------------------------------------------------------------------------------------
# Paths


def path_problem(value):
    """What is wrong with an absolute path that reaches a unit, a command line or a file name; '' if fine."""
    if not value.startswith("/"):
        return "is not an absolute path"
    if CONTROL_RE.search(value):
        return "contains a control character (newline, carriage return, tab, ...)"
    if posixpath.normpath(value) != value or "//" in value:
        return "is not a normalised path (no '.', '..', '//' or trailing '/'; normalised: %s)" % show(
            posixpath.normpath(value)
        )
    if value == "/":
        return "is the root directory"
    if not SAFE_PATH_RE.fullmatch(value):
        return "contains a character other than letters, digits, '/', '.', '_', '+' and '-' (spaces, %, $, quotes)"
    return ""


def components(path):
    return [part for part in path.split("/") if part]


def is_within(path, parent):
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_base(problems, name, value):
    value = read_str(problems, name, value, allow_empty=False)
    if value is None:
        return None
    if value == "":
        problems.add(name, "is empty", "give an absolute directory such as /srv/gunicorn or /etc/gunicorn")
        return None
    problem = path_problem(value)
    if problem:
        problems.add(name, "(%s) %s" % (show(value), problem), "give an absolute directory such as /srv/gunicorn")
        return None
    parts = components(value)
    if len(parts) < 2:
        problems.add(
            name,
            "(%s) has a single component: the role creates and, with gunicorn_state absent, removes "
            "<base>/<instance>, which would be a top-level directory" % show(value),
            "give a directory of its own such as %s" % ("/etc/gunicorn" if "config" in name else "/srv/gunicorn"),
        )
        return None
    if parts[0] in BASE_REFUSED_TREES or value in BASE_REFUSED or any(is_within(value, t) for t in BASE_REFUSED_WITHIN):
        problems.add(
            name,
            "(%s) is a system directory or under one (refused: /%s and %s)"
            % (
                show(value),
                ", /".join(sorted(BASE_REFUSED_TREES)),
                "system directories such as /etc/systemd, /usr/lib, /var/lib",
            ),
            "give a directory of its own such as /srv/gunicorn",
        )
        return None
    return value


def read_write_path_problem(path):
    problem = path_problem(path)
    if problem:
        return problem
    parts = components(path)
    if parts[0] in SYSTEM_TREES:
        return "is in /%s, a system tree the service must not write to" % parts[0]
    if len(parts) < 2:
        return "is a top-level directory (%s)" % path
    return ""


# ---------------------------------------------------------------------------------------------------------
# The release, as the role derives it


def release_of(release, packages):
    """The release directory name: gunicorn_release, else the first package's '==' pin or wheel version."""
    if release is not None and not isinstance(release, bool):
        given = text(release) if is_text(release) else str(release)
        if given:
            return given
    if not is_list(packages) or not packages:
        return ""
    first = text(packages[0]) if is_text(packages[0]) else str(packages[0])
    if "==" in first:
        return pinned_version(first)
    if first.endswith(".whl"):
        name_parts = posixpath.basename(first).split("-")
        return name_parts[1].strip() if len(name_parts) > 1 else ""
    return ""


def pinned_version(requirement):
    """The version a pip requirement pins exactly (``name==1.2.3``, ``name===1.2.3``), else "".

    Parsed as pip parses it (PEP 508, with ``packaging``): extras, markers and other specifiers may
    surround the pin; a wildcard (``==1.*``), two different pins, a URL or an unparsable line pin nothing.
    """
    # packaging is a dependency of ansible-core, imported here so that the other checks need nothing beyond it
    from packaging.requirements import InvalidRequirement, Requirement

    if not is_text(requirement):
        return ""
    try:
        parsed = Requirement(text(requirement))
    except InvalidRequirement:
        return ""
    if parsed.url:
        return ""
    pins = {spec.version for spec in parsed.specifier if spec.operator in ("==", "===") and "*" not in spec.version}
    return pins.pop() if len(pins) == 1 else ""


# ---------------------------------------------------------------------------------------------------------
# gunicorn_settings values


def setting_value_problem(value, path, depth=0):
    if depth > 8:
        return "%s is nested too deeply" % path
    if value is None or isinstance(value, (bool, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return path, "is %r, which has no Python literal" % value
        return None
    if isinstance(value, int):
        if abs(value) > SETTING_INT_LIMIT:
            return path, "is an integer of %d bits, out of range (give a whole number of at most %d)" % (
                value.bit_length(),
                SETTING_INT_LIMIT,
            )
        return None
    if isinstance(value, str):
        if "\0" in value:
            return path, "contains a NUL character"
        if len(value) > MAX_SETTING_TEXT:
            return path, "is %d characters long (at most %d)" % (len(value), MAX_SETTING_TEXT)
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return path, "has a key of %s" % kind(key)
            problem = setting_value_problem(key, "%s key %s" % (path, show(key)), depth + 1) or setting_value_problem(
                item, "%s[%s]" % (path, show(key)), depth + 1
            )
            if problem:
                return problem
        return None
    if is_list(value):
        for index, item in enumerate(value):
            problem = setting_value_problem(item, "%s[%d]" % (path, index), depth + 1)
            if problem:
                return problem
        return None
    return path, "is %s, which has no Python literal" % kind(value)


# ---------------------------------------------------------------------------------------------------------
# The role's variables


def check_packages(problems, name, value, required, example):
    items = read_list(problems, name, value, example)
    if items is None:
        return None
    if required and not items:
        problems.add(name, "is empty", "list the pip requirements that install the app, e.g. %s" % example)
        return None
    good = []
    for index, item in enumerate(items):
        if not is_text(item):
            problems.add("%s[%d]" % (name, index), "must be a string, got %s %s" % (kind(item), show(item)))
            continue
        item = text(item)
        if not PACKAGE_RE.fullmatch(item) or item.strip() != item:
            problems.add(
                "%s[%d]" % (name, index),
                "(%s) is not a pip requirement or path" % show(item),
                "give a requirement such as myapp==1.2.3 or an absolute path; no leading '-' (pip options go in "
                "gunicorn_pip_extra_args), no control characters, quotes or '$'",
            )
            continue
        good.append(item)
    return good


def check_app(problems, value, required):
    app = read_str(problems, "gunicorn_app", value)
    if app is None:
        return
    if app == "":
        if required:
            problems.add(
                "gunicorn_app", "is not set", 'set it to the app as "package.module:callable", e.g. myapp.main:app'
            )
        return
    if not APP_RE.fullmatch(app):
        problems.add(
            "gunicorn_app",
            "(%s) is not module:callable" % show(app),
            "give a dotted module, ':' and a name, e.g. myapp.main:app, or a factory call with literal "
            "arguments only, e.g. myapp:create_app() or myapp:create_app(workers=2,debug=False); no spaces, quotes, "
            "'%', '$' or control characters (it is written into the unit's ExecStart= and Description=)",
        )


def check_account(problems, name, value, instance_hint):
    account = read_str(problems, name, value)
    if account is None:
        return None
    if not ACCOUNT_RE.fullmatch(account):
        problems.add(
            name,
            "(%s) is not a valid user or group name" % show(account),
            "use lower case letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters%s"
            % (instance_hint,),
        )
        return None
    if account in DANGEROUS_GROUPS:
        problems.add(name, "(%s) is a system account" % show(account), "give the service an account of its own")
        return None
    return account


# Names the service's own machinery sets: a value from the role would break socket activation, the re-exec or
# the environment file's bookkeeping (LISTEN_* is refused as a prefix).
RESERVED_ENV_NAMES = frozenset(
    (
        "GRACEFUL_GUNICORN_ENV_FILE",
        "GRACEFUL_GUNICORN_ENV_KEYS",
        "GRACEFUL_GUNICORN_GENERATION",
        "GUNICORN_PID",
        "GUNICORN_FD",
        "NOTIFY_SOCKET",
        "PWD",
    )
)


def check_environment(problems, name, value):
    env = read_mapping(problems, name, value, '{"LOG_LEVEL": "info"}')
    if env is None:
        return {}
    for key, item in env.items():
        if not is_text(key) or not ENV_NAME_RE.fullmatch(text(key)) or len(text(key)) > 255:
            problems.add(
                name,
                "has the key %s, which is not an environment variable name" % show(key),
                "use letters, digits and '_', not starting with a digit",
            )
            continue
        if text(key) in RESERVED_ENV_NAMES or text(key).startswith("LISTEN_"):
            problems.add(
                "%s.%s" % (name, text(key)),
                "is set by systemd or the arbiter (socket activation, the environment file, the re-exec)",
                "choose another name",
            )
            continue
        label = "%s.%s" % (name, text(key))
        shown = "" if "secret" in name else " (%s)" % show(item)
        if isinstance(item, (Mapping, list, tuple)):
            problems.add(label, "is %s%s" % (kind(item), shown), "give a string, number or boolean")
            continue
        if isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 64:
            problems.add(label, "is an integer of %d bits, out of range" % item.bit_length(), "give it as a string")
            continue
        if is_text(item):
            item_text = text(item)
            if "\0" in item_text or "\n" in item_text or "\r" in item_text:
                problems.add(
                    label,
                    "contains a NUL, newline or carriage return%s" % shown,
                    "the environment file holds one line per variable: give a single-line value",
                )
            elif len(item_text) > MAX_ENV_VALUE:
                problems.add(label, "is %d characters long (at most %d)" % (len(item_text), MAX_ENV_VALUE))
    return env


def check_bind(problems, value, runtime_dir, rw_paths):
    if is_text(value):
        binds = [text(value)]
    else:
        binds = read_list(problems, "gunicorn_bind", value, '["127.0.0.1:8000"]')
        if binds is None:
            return []
    if not binds:
        problems.add("gunicorn_bind", "is empty", 'give at least one address, e.g. "127.0.0.1:8000"')
        return []
    good = []
    for index, bind in enumerate(binds):
        label = "gunicorn_bind" if is_text(value) else "gunicorn_bind[%d]" % index
        if not is_text(bind):
            problems.add(label, "must be a string, got %s %s" % (kind(bind), show(bind)))
            continue
        bind = text(bind)
        unix = UNIX_BIND_RE.fullmatch(bind)
        if unix:
            path = unix.group("path")
            problem = path_problem(path)
            if problem:
                problems.add(
                    label,
                    "(%s): the socket path %s" % (show(bind), problem),
                    "e.g. unix:%s/gunicorn.sock" % runtime_dir,
                )
                continue
            if len(path.encode("utf-8")) > MAX_UNIX_PATH:
                problems.add(label, "(%s): the socket path is longer than %d bytes" % (show(bind), MAX_UNIX_PATH))
                continue
            directory = posixpath.dirname(path)
            if directory != runtime_dir and not any(is_within(directory, rw) for rw in rw_paths):
                problems.add(
                    label,
                    "(%s): a unix socket must be in %s (systemd creates it for the service; everything else is "
                    "read-only) or in a directory listed in gunicorn_read_write_paths" % (show(bind), runtime_dir),
                    "e.g. unix:%s/gunicorn.sock" % runtime_dir,
                )
                continue
            good.append(bind)
            continue
        tcp = TCP_BIND_RE.fullmatch(bind)
        if not tcp:
            problems.add(
                label,
                "(%s) is not understood" % show(bind),
                'give "HOST:PORT" (e.g. "127.0.0.1:8000"), "[IPV6]:PORT" or "unix:%s/gunicorn.sock"' % runtime_dir,
            )
            continue
        port = int(tcp.group("port"))
        if not 1 <= port <= 65535:
            problems.add(label, "(%s) has port %d" % (show(bind), port), "give a port from 1 to 65535")
            continue
        good.append(bind)
    return good


def _listen_key(bind):
    """What a bind listens on, for comparing binds: (family, address, port); None if it cannot be told."""
    unix = UNIX_BIND_RE.fullmatch(bind)
    if unix:
        return ("unix", posixpath.normpath(unix.group("path")), None)
    tcp = TCP_BIND_RE.fullmatch(bind)
    if not tcp:
        return None
    host, port = tcp.group("host"), int(tcp.group("port"))
    try:
        if host.startswith("["):
            return ("ipv6", ipaddress.IPv6Address(host[1:-1]), port)
        return ("ipv4", ipaddress.IPv4Address({"": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)), port)
    except ValueError:
        return ("name", host.lower(), port)


def _clash(first, second):
    if first[0] != second[0] or first[2] != second[2]:
        return False
    if first[1] == second[1]:
        return True
    # a wildcard address takes the port on every address of its family
    return first[0] in ("ipv4", "ipv6") and (first[1].is_unspecified or second[1].is_unspecified)


def check_bind_clashes(problems, binds):
    """Two binds on one address (or a port and a wildcard of its family): the second can never listen, and a restart
    that needs both (a socket unit each, or gunicorn binding both) would leave the instance down."""
    seen = []
    for bind in binds:
        key = _listen_key(bind)
        if key is None:
            continue
        for other, other_key in seen:
            if _clash(other_key, key):
                problems.add(
                    "gunicorn_bind",
                    "(%s and %s) cannot both listen: they are the same address, or one is a wildcard address on the "
                    "other's port" % (show(other), show(bind)),
                    "give each address once (a wildcard such as 0.0.0.0:PORT covers the others on PORT)",
                )
                break
        seen.append((bind, key))


def check_unit_extra(problems, value):
    lines = read_list(problems, "gunicorn_unit_extra", value, '["LimitNOFILE=65536"]')
    if lines is None:
        return
    for index, line in enumerate(lines):
        label = "gunicorn_unit_extra[%d]" % index
        if not is_text(line):
            problems.add(label, "must be a string, got %s %s" % (kind(line), show(line)))
            continue
        match = UNIT_LINE_RE.fullmatch(text(line))
        if not match:
            problems.add(
                label,
                "(%s) is not one Key=value line" % show(line),
                "no newline, carriage return or other control character, no backslash, e.g. LimitNOFILE=65536",
            )
            continue
        key = match.group("key")
        allowed = key in UNIT_EXTRA_KEYS or (key.startswith(UNIT_EXTRA_PREFIXES) and key not in UNIT_EXTRA_REFUSED)
        if not allowed:
            problems.add(
                label,
                "sets %s, which the role does not let a variable set (identity, privileges, commands and the "
                "sandbox are the role's)" % key,
                "allowed: resource limits and accounting (Limit*, CPU*, Memory*, IO*, Tasks*), Timeout*, Restart*, "
                "Nice, OOMScoreAdjust, Environment, logging (LogLevelMax, SyslogIdentifier, ...)",
            )


def check_settings(problems, value, certfile_out):
    settings = read_mapping(problems, "gunicorn_settings", value, '{"keepalive": 5}')
    if settings is None:
        return
    names = []
    for key in settings:
        if not is_text(key) or not re.fullmatch(IDENTIFIER, text(key)):
            problems.add("gunicorn_settings", "has the key %s, which is not a setting name" % show(key))
            continue
        names.append(text(key))
    for unknown in unknown_settings(names):
        hint = "did you mean %r?" % unknown["suggestion"] if unknown.get("suggestion") else "no similar setting"
        problems.add(
            "gunicorn_settings.%s" % unknown["name"],
            "is not a setting gunicorn knows (%s); gunicorn would silently ignore it" % hint,
            "see https://docs.gunicorn.org/en/stable/settings.html",
        )
    for name in names:
        if name in MANAGED_SETTINGS:
            problems.add("gunicorn_settings.%s" % name, "is managed by the role", MANAGED_SETTINGS[name])
        elif name in REFUSED_SETTING_VALUES and settings[name]:
            problems.add("gunicorn_settings.%s" % name, "is refused", REFUSED_SETTING_VALUES[name])
        problem = setting_value_problem(settings[name], "gunicorn_settings.%s" % name)
        if problem:
            problems.add(*problem)
    certfile = settings.get("certfile")
    certfile_out.append(bool(certfile))


def check_config_extra(problems, value):
    extra = read_str(problems, "gunicorn_config_extra", value)
    if not extra:
        return
    if "\0" in extra or len(extra) > MAX_CONFIG_EXTRA:
        problems.add(
            "gunicorn_config_extra", "contains a NUL character or is longer than %d characters" % MAX_CONFIG_EXTRA
        )
        return
    try:
        # Only compiled, never run: a syntax error is reported here rather than by gunicorn on the host.
        compile(extra, "gunicorn_config_extra", "exec")
    except (SyntaxError, ValueError) as exc:
        problems.add(
            "gunicorn_config_extra",
            "is not valid Python (line %s: %s)" % (getattr(exc, "lineno", "?"), getattr(exc, "msg", str(exc))),
            "it is appended to gunicorn.conf.py",
        )


def instance_problems(values, scope="role"):
    """Problems with the server role's variables, given resolved values by variable name.

    scope 'role' checks everything the role uses (app, packages, binds, unit, environment, ...);
    scope 'instance' only what the actions that do not install read (rollback, reload, refresh).
    Missing or null values are treated as unset.
    """
    if not isinstance(values, Mapping):
        return ["the role's variables could not be read (got %s)" % kind(values)]
    values = dict((key, value) for key, value in values.items() if value is not None)
    problems = Problems()
    get = values.get

    instance = read_str(problems, "gunicorn_instance", get("gunicorn_instance"))
    if instance == "":
        problems.add("gunicorn_instance", "is not set", "set it to the instance's name, e.g. -e gunicorn_instance=api")
        instance = None
    elif instance is not None and not INSTANCE_RE.fullmatch(instance):
        problems.add(
            "gunicorn_instance",
            "(%s) is not an instance name" % show(instance),
            "use lower case letters, digits, '-' and '_', starting with a letter or digit, at most 40 characters",
        )
        instance = None
    service = "gunicorn-%s" % (instance or "INSTANCE")
    runtime_dir = "/run/" + service

    root_base = check_base(problems, "gunicorn_root_base", get("gunicorn_root_base", "/srv/gunicorn"))
    config_base = check_base(problems, "gunicorn_config_base", get("gunicorn_config_base", "/etc/gunicorn"))
    if root_base and config_base and root_base == config_base:
        problems.add(
            "gunicorn_root_base",
            "and gunicorn_config_base are the same directory (%s)" % show(root_base),
            "keep them apart",
        )

    if "gunicorn_health_check" in values:
        read_bool(problems, "gunicorn_health_check", get("gunicorn_health_check"))
    if "gunicorn_bake_seconds" in values:
        read_number(problems, "gunicorn_bake_seconds", get("gunicorn_bake_seconds"), 0, 86400)
    if "gunicorn_keep_releases" in values:
        read_int(
            problems, "gunicorn_keep_releases", get("gunicorn_keep_releases"), *INT_BOUNDS["gunicorn_keep_releases"]
        )

    if scope == "instance":
        return problems.items
    if scope != "role":
        return ["instance_problems: scope must be 'role' or 'instance', not %s" % show(scope)]

    state = get("gunicorn_state", "present")
    if state not in ("present", "absent"):
        problems.add("gunicorn_state", "is %s" % show(state), "give present or absent")
        state = "present"
    present = state == "present"

    user = check_account(
        problems, "gunicorn_user", get("gunicorn_user"), "; with a long gunicorn_instance set gunicorn_user explicitly"
    )
    check_account(problems, "gunicorn_group", get("gunicorn_group"), "")
    if user == "root":
        problems.add("gunicorn_user", "is root", "the service must run as an account of its own")
    socket_group = read_str(problems, "gunicorn_socket_group", get("gunicorn_socket_group"))
    if socket_group:
        if not ACCOUNT_RE.fullmatch(socket_group):
            problems.add(
                "gunicorn_socket_group", "(%s) is not a valid group name" % show(socket_group), "e.g. www-data"
            )
        elif socket_group in DANGEROUS_GROUPS:
            problems.add(
                "gunicorn_socket_group",
                "(%s) is a system group the service must not join (refused: %s)"
                % (show(socket_group), ", ".join(sorted(DANGEROUS_GROUPS))),
                "give the reverse proxy's group, e.g. www-data",
            )
    for flag in (
        "gunicorn_remove_user",
        "gunicorn_wheelhouse_remote_src",
        "gunicorn_preload_app",
        "gunicorn_control_socket_enabled",
        "gunicorn_service_enabled",
        "gunicorn_memory_deny_write_execute",
        "gunicorn_socket_activation",
    ):
        if flag in values:
            read_bool(problems, flag, get(flag))

    rw_paths = []
    raw_rw = read_list(
        problems, "gunicorn_read_write_paths", get("gunicorn_read_write_paths", []), '["/var/lib/myapp"]'
    )
    for index, path in enumerate(raw_rw or []):
        label = "gunicorn_read_write_paths[%d]" % index
        if not is_text(path):
            problems.add(label, "must be a string, got %s %s" % (kind(path), show(path)))
            continue
        problem = read_write_path_problem(text(path))
        if problem:
            problems.add(
                label,
                "(%s) %s" % (show(path), problem),
                "give a directory of the app's own, e.g. /var/lib/myapp (not /, a system tree such as /etc, /usr, "
                "/boot, /proc, nor a top-level directory such as /var, /srv, /home)",
            )
            continue
        instance_trees = []
        if instance and root_base:
            instance_trees.append(root_base + "/" + instance)
        if instance and config_base:
            instance_trees.append(config_base + "/" + instance)
        overlap = [tree for tree in instance_trees if is_within(text(path), tree) or is_within(tree, text(path))]
        if overlap:
            problems.add(
                label,
                "(%s) overlaps %s, the instance's code or configuration" % (show(path), overlap[0]),
                "the service must never write there",
            )
            continue
        rw_paths.append(text(path))

    if not present:
        return problems.items

    check_app(problems, get("gunicorn_app"), required=True)
    packages = check_packages(problems, "gunicorn_app_packages", get("gunicorn_app_packages"), True, '["myapp==1.2.3"]')
    check_packages(
        problems, "gunicorn_worker_packages", get("gunicorn_worker_packages", []), False, '["uvicorn-worker==0.4.0"]'
    )
    check_packages(
        problems,
        "gunicorn_uvicorn_worker_packages",
        get("gunicorn_uvicorn_worker_packages", []),
        False,
        '["uvicorn==0.54.0"]',
    )
    release_value = get("gunicorn_release")
    if (
        release_value is not None
        and not isinstance(release_value, bool)
        and not is_text(release_value)
        and not isinstance(release_value, (int, float))
    ):
        problems.add("gunicorn_release", "must be a string, got %s %s" % (kind(release_value), show(release_value)))
    elif packages is not None:
        release = release_of(release_value, packages)
        source = "gunicorn_release" if release_of(release_value, []) else "gunicorn_app_packages[0]"
        first = packages[0] if is_list(packages) and packages else None
        if release == "" and is_text(first) and "==" in text(first):
            problems.add(
                "gunicorn_app_packages[0]",
                "(%s) pins no version pip can read (==VERSION), so its version is not a usable directory name"
                % show(first),
                "pin an exact version, e.g. myapp==1.2.3, or set gunicorn_release",
            )
        elif release == "":
            problems.add(
                "gunicorn_release",
                "is not set and gunicorn_app_packages[0] (%s) pins no version"
                % show(packages[0] if packages else None),
                'pin it with "==VERSION" or set gunicorn_release',
            )
        elif not RELEASE_RE.fullmatch(release):
            problems.add(
                source,
                "gives the release %s, which is not a usable directory name" % show(release),
                "use letters, digits, '.', '_', '+' and '-', starting with a letter or digit, at most 128 characters",
            )

    version = read_str(problems, "gunicorn_version", get("gunicorn_version", "27.0.1"))
    if version is not None and not VERSION_RE.fullmatch(version):
        problems.add("gunicorn_version", "(%s) is not a version" % show(version), "e.g. 27.0.1")

    worker_class = read_str(problems, "gunicorn_worker_class", get("gunicorn_worker_class", "gthread"))
    if worker_class is not None:
        if not re.fullmatch(DOTTED, worker_class) or len(worker_class) > 200:
            problems.add(
                "gunicorn_worker_class",
                "(%s) is not a worker class" % show(worker_class),
                "e.g. gthread, asgi or uvicorn_worker.UvicornWorker",
            )
        elif worker_class.startswith("uvicorn.workers."):
            problems.add(
                "gunicorn_worker_class",
                "(%s) is deprecated by uvicorn" % show(worker_class),
                'use "uvicorn_worker.UvicornWorker" (package uvicorn-worker, installed by the role) '
                'or gunicorn\'s own "asgi"',
            )

    python = read_str(problems, "gunicorn_python", get("gunicorn_python", "/usr/bin/python3"))
    if python is not None and (not PYTHON_RE.fullmatch(python) or path_problem(python)):
        problems.add(
            "gunicorn_python",
            "(%s) is not a Python interpreter under /usr or /opt" % show(python),
            "root runs it to create the venvs: give a normalised absolute path such as /usr/bin/python3",
        )
    index_url = read_str(problems, "gunicorn_pip_index_url", get("gunicorn_pip_index_url"))
    if index_url and not URL_RE.fullmatch(index_url):
        problems.add(
            "gunicorn_pip_index_url",
            "(%s) is not an http(s) URL" % show(index_url),
            "e.g. https://pypi.internal/simple",
        )
    pip_args = read_str(problems, "gunicorn_pip_extra_args", get("gunicorn_pip_extra_args"))
    if pip_args and (CONTROL_RE.search(pip_args) or len(pip_args) > 4096):
        problems.add(
            "gunicorn_pip_extra_args",
            "contains a control character (newline, carriage return, ...)",
            "give one line of pip options",
        )
    wheelhouse = read_str(problems, "gunicorn_wheelhouse", get("gunicorn_wheelhouse"))
    if wheelhouse:
        problem = "contains a control character" if CONTROL_RE.search(wheelhouse) else ""
        if not problem and read_bool(Problems(), "", get("gunicorn_wheelhouse_remote_src", False)):
            problem = path_problem(wheelhouse)
        if problem:
            problems.add("gunicorn_wheelhouse", "(%s) %s" % (show(wheelhouse), problem), "give the directory of wheels")
    cache_dir = get("gunicorn_artifact_cache_dir")
    cache_dir = None if cache_dir is None else read_str(problems, "gunicorn_artifact_cache_dir", cache_dir)
    if cache_dir is not None and (not cache_dir.strip() or CONTROL_RE.search(cache_dir)):
        problems.add(
            "gunicorn_artifact_cache_dir",
            "(%s) is empty or contains a control character" % show(cache_dir),
            "give a directory on the controller, or leave it unset for ~/.cache/graceful-gunicorn/artifacts",
        )
    arbiter_wheel = read_str(problems, "gunicorn_arbiter_wheel", get("gunicorn_arbiter_wheel"))
    if arbiter_wheel:
        if CONTROL_RE.search(arbiter_wheel):
            problem = "contains a control character"
        elif not ARBITER_WHEEL_RE.fullmatch(arbiter_wheel.rsplit("/", 1)[-1]):
            problem = "(%s) is not a wheel of the arbiter (graceful_gunicorn_arbiter-VERSION-py3-none-any.whl)" % show(
                arbiter_wheel
            )
        else:
            problem = ""
        if problem:
            problems.add(
                "gunicorn_arbiter_wheel",
                problem,
                "leave it unset for the wheel the collection ships, or give one built by make arbiter-wheel",
            )
    if get("gunicorn_arbiter_src") is not None:
        problems.add(
            "gunicorn_arbiter_src",
            "is no longer read: the role installs the arbiter from a wheel",
            "remove it, or set gunicorn_arbiter_wheel to a wheel built from arbiter/ (make arbiter-wheel)",
        )

    binds = check_bind(problems, get("gunicorn_bind", "127.0.0.1:8000"), runtime_dir, rw_paths)
    check_bind_clashes(problems, binds)
    if read_bool(Problems(), "", get("gunicorn_socket_activation", True)):
        for bind in binds:
            tcp = TCP_BIND_RE.fullmatch(bind)
            host = tcp.group("host") if tcp else ""
            if tcp and host not in ("", "localhost") and not host.startswith("[") and not IPV4_RE.fullmatch(host):
                problems.add(
                    "gunicorn_bind",
                    "(%s) names a host: under gunicorn_socket_activation systemd listens, and it takes addresses only"
                    % show(bind),
                    "give the address (e.g. 127.0.0.1:%s), or set gunicorn_socket_activation: false"
                    % tcp.group("port"),
                )
    if socket_group and not any(bind.startswith("unix:") for bind in binds) and binds:
        problems.add(
            "gunicorn_socket_group",
            "is set but gunicorn_bind has no unix socket",
            "bind a unix socket or leave it empty",
        )

    ints = {}
    for name, (low, high) in INT_BOUNDS.items():
        if name in values and name != "gunicorn_keep_releases":
            ints[name] = read_int(problems, name, get(name), low, high)
    max_requests = ints.get("gunicorn_max_requests")
    jitter = ints.get("gunicorn_max_requests_jitter", 0)
    if max_requests and jitter is not None and not 0 < jitter <= max_requests:
        problems.add(
            "gunicorn_max_requests_jitter",
            "is %d but gunicorn_max_requests is %d: without jitter all workers reach the limit together and restart "
            "at once" % (jitter, max_requests),
            "give a number from 1 to gunicorn_max_requests, e.g. %d" % max(max_requests // 10, 1),
        )

    certfile = []
    check_settings(problems, get("gunicorn_settings", {}), certfile)
    check_config_extra(problems, get("gunicorn_config_extra"))
    check_environment(problems, "gunicorn_environment", get("gunicorn_environment", {}))
    check_environment(problems, "gunicorn_secret_environment", get("gunicorn_secret_environment", {}))

    prefix = read_str(problems, "gunicorn_url_prefix", get("gunicorn_url_prefix"))
    if prefix and (not URL_PREFIX_RE.fullmatch(prefix) or len(prefix) > 255):
        problems.add(
            "gunicorn_url_prefix",
            "(%s) is not a URL prefix" % show(prefix),
            "leave it empty or give '/' and path segments of letters, digits, '.', '_', '~' and '-', "
            "without a trailing '/', e.g. /api",
        )
    prefix_env = read_str(problems, "gunicorn_url_prefix_env", get("gunicorn_url_prefix_env"))
    if prefix_env and not ENV_NAME_RE.fullmatch(prefix_env):
        problems.add(
            "gunicorn_url_prefix_env", "(%s) is not an environment variable name" % show(prefix_env), "e.g. SCRIPT_NAME"
        )
    health_path = read_str(problems, "gunicorn_health_path", get("gunicorn_health_path", "/health"))
    if health_path is not None and not HEALTH_PATH_RE.fullmatch(health_path):
        problems.add(
            "gunicorn_health_path",
            "(%s) is not a URL path" % show(health_path),
            "give '/' and letters, digits, '.', '_', '~', '/', '-', with an optional simple ?query, e.g. /health",
        )
    statuses = read_list(problems, "gunicorn_health_status", get("gunicorn_health_status", [200]), "[200]")
    if statuses is not None:
        if not statuses:
            problems.add("gunicorn_health_status", "is empty", "list the healthy statuses, e.g. [200]")
        for index, status in enumerate(statuses):
            read_int(problems, "gunicorn_health_status[%d]" % index, status, 100, 599)

    check_unit_extra(problems, get("gunicorn_unit_extra", []))
    restart_mode = get("gunicorn_restart_mode", "immediate")
    if restart_mode not in RESTART_MODES:
        problems.add(
            "gunicorn_restart_mode",
            "is %s" % show(restart_mode),
            "give immediate (restart in the role when the unit changes) or deferred (leave the restart to the "
            "deploy playbook, which restarts one host at a time)",
        )
    return problems.items


# ---------------------------------------------------------------------------------------------------------
# The rollout playbooks' own variables

# The collection's own examples (examples/haproxy/...): hook task files allowed when gunicorn_hook_dirs is unset.
COLLECTION_EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"
)
SERIAL_ITEM_RE = re.compile(r"[1-9][0-9]{0,5}|(?:[1-9][0-9]?|100)%")
PACKAGE_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,199})(?:\[[A-Za-z0-9,._-]{1,200}\])?")
ACTIONS = ("deploy", "upgrade", "rollback", "reload", "refresh")
# Task files a deploy or an upgrade runs once: before the first host switches, and after the last one.
RUN_ONCE_TASKS = ("gunicorn_before_switch_tasks", "gunicorn_after_rollout_tasks")


def hook_file_problem(path, dirs):
    """What is wrong with a drain/undrain task file on the controller, or '' when it may be run.

    The file runs as root on every host, so it must be a regular file whose real path (symlinks resolved) is
    inside one of ``dirs``, and neither it nor a directory between it and that directory may be writable by
    anyone else: each must belong to root or the user running ansible-playbook and not be world-writable.
    """
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        return (
            "(%s) is not a file on the controller (relative paths are from the directory ansible-playbook runs in)"
            % show(path)
        )
    inside = None
    for directory in dirs:
        real_dir = os.path.realpath(directory)
        if real == real_dir or real.startswith(real_dir.rstrip("/") + "/"):
            inside = real_dir
            break
    if inside is None:
        return "(%s, really %s) is not inside a directory of gunicorn_hook_dirs (%s)" % (
            show(path),
            show(real),
            ", ".join(show(d) for d in dirs) or "none",
        )
    current = real
    while True:
        info = os.stat(current)
        if info.st_mode & stat.S_IWOTH:
            return "(%s): %s is writable by every user" % (show(path), current)
        if info.st_uid not in (0, os.geteuid()):
            return "(%s): %s belongs to another user (uid %d)" % (show(path), current, info.st_uid)
        if current == inside:
            break
        current = os.path.dirname(current)
    return ""


def rollout_problems(values, action, hook_dirs_overridden=False):
    """Problems with the rollout playbooks' variables (serial, budgets, release names, files).

    ``hook_dirs_overridden`` says gunicorn_hook_dirs came from the extra vars (or a fact), where a survey
    or a CI job could have put it: then no hook file is run.
    """
    problems = Problems()
    if action not in ACTIONS:
        return ["the rollout action must be one of %s, not %s" % (", ".join(ACTIONS), show(action))]
    if not isinstance(values, Mapping):
        return ["the rollout's variables could not be read (got %s)" % kind(values)]
    values = dict((key, value) for key, value in values.items() if value is not None)
    get = values.get

    target = get("gunicorn_target", "gunicorn_hosts")
    if not is_text(target) or not text(target) or CONTROL_RE.search(text(target)) or len(text(target)) > 1024:
        problems.add(
            "gunicorn_target",
            "(%s) is not a host pattern" % show(target),
            "e.g. -e gunicorn_target=web or -e 'gunicorn_target=web:&eu'",
        )

    serial = get("gunicorn_serial")
    if serial is not None:
        items = list(serial) if is_list(serial) else [serial]
        bad = [item for item in items if isinstance(item, bool) or not SERIAL_ITEM_RE.fullmatch(str(item))]
        if not items or bad:
            problems.add(
                "gunicorn_serial",
                "(%s) is not a batch size" % show(serial),
                'give a number of hosts (>= 1), a percentage such as "25%" (1% to 100%), or a non-empty list of those, '
                'e.g. [1, "50%"]',
            )
    if "gunicorn_max_fail_percentage" in values:
        read_number(problems, "gunicorn_max_fail_percentage", get("gunicorn_max_fail_percentage"), 0, 100)
    if "gunicorn_bake_seconds" in values:
        read_number(problems, "gunicorn_bake_seconds", get("gunicorn_bake_seconds"), 0, 86400)
    if "gunicorn_keep_releases" in values:
        read_int(
            problems, "gunicorn_keep_releases", get("gunicorn_keep_releases"), *INT_BOUNDS["gunicorn_keep_releases"]
        )
    if "gunicorn_become" in values:
        read_bool(problems, "gunicorn_become", get("gunicorn_become"))
    stage = get("gunicorn_stage")
    auto = is_text(stage) and text(stage).strip().lower() == "auto"
    if stage is not None and not auto and read_bool(Problems(), "gunicorn_stage", stage) is None:
        problems.add(
            "gunicorn_stage",
            "must be auto, true or false, got %s %s" % (kind(stage), show(stage)),
            "auto stages when the rollout has more than one batch",
        )

    run_once = [name for name in RUN_ONCE_TASKS if get(name) not in (None, "")]
    if run_once and action not in ("deploy", "upgrade"):
        problems.add(
            run_once[0],
            "is set, but a %s installs no release, so it has no switch to run tasks around" % action,
            "set it for the deploy and upgrade playbooks only",
        )
    place = get("gunicorn_run_once_on")
    if place is not None and (not is_text(place) or text(place) not in ("host", "controller")):
        problems.add(
            "gunicorn_run_once_on",
            "must be host or controller, got %s %s" % (kind(place), show(place)),
            "host runs the run-once tasks on the first target host with the release installed; controller runs "
            "them on the controller",
        )
    if (
        get("gunicorn_before_switch_tasks") not in (None, "")
        and stage is not None
        and not auto
        and read_bool(Problems(), "gunicorn_stage", stage) is False
    ):
        problems.add(
            "gunicorn_before_switch_tasks",
            "needs the release staged on the hosts before the first switch, but gunicorn_stage is false",
            "leave gunicorn_stage unset (auto stages when tasks run before the switch) or set it to true",
        )

    for name in ("gunicorn_drain_tasks", "gunicorn_undrain_tasks", *RUN_ONCE_TASKS, "gunicorn_summary_file"):
        value = get(name)
        if value is None or value == "":
            continue
        if not is_text(value) or CONTROL_RE.search(text(value)) or len(text(value)) > 4096:
            problems.add(name, "(%s) is not a file path" % show(value), "give a path on the controller")
        elif name != "gunicorn_summary_file" and not re.fullmatch(r"[^{}%$`\\]+\.ya?ml", text(value)):
            problems.add(
                name,
                "(%s) is not a task file name" % show(value),
                "give a .yml or .yaml file in a directory of gunicorn_hook_dirs, "
                "without '{', '}', '%', '$', '`' or '\\'",
            )

    hooks = [
        name
        for name in ("gunicorn_drain_tasks", "gunicorn_undrain_tasks", *RUN_ONCE_TASKS)
        if is_text(get(name)) and get(name)
    ]
    hook_dirs = get("gunicorn_hook_dirs")
    if hook_dirs is None:
        hook_dirs = [COLLECTION_EXAMPLES]
    elif hook_dirs_overridden:
        problems.add(
            "gunicorn_hook_dirs",
            "is given as an extra variable (-e, a survey or a job's extra variables)",
            "set it in the inventory or in the playbook's group_vars, where only the playbook's authors can change it",
        )
        hooks = []
    else:
        hook_dirs = read_list(problems, "gunicorn_hook_dirs", hook_dirs, '["/srv/ansible/hooks"]')
        bad_dirs = [
            d for d in hook_dirs or [] if not is_text(d) or not text(d).startswith("/") or CONTROL_RE.search(text(d))
        ]
        if hook_dirs is None or bad_dirs:
            if bad_dirs:
                problems.add(
                    "gunicorn_hook_dirs",
                    "has %s, not an absolute directory" % show(bad_dirs[0]),
                    "list absolute controller directories",
                )
            hooks = []
    for name in hooks:
        if name in [item.split(" ", 1)[0] for item in problems.items]:
            continue
        problem = hook_file_problem(text(get(name)), [text(d) for d in hook_dirs])
        if problem:
            problems.add(
                name,
                problem,
                "the drain, undrain and run-once tasks run as root: keep them in a directory of gunicorn_hook_dirs "
                "(default: the collection's examples/), owned by you or root and writable by no one else",
            )

    release = get("gunicorn_release")
    if action == "upgrade" and (release is None or release == ""):
        problems.add(
            "gunicorn_release",
            "is not set",
            "set it to the release to upgrade to, e.g. -e gunicorn_release=2.4.1 -e gunicorn_app_package=myapi",
        )
    elif (
        release is not None
        and release != ""
        and action in ("upgrade", "deploy")
        and (
            isinstance(release, bool)
            or not isinstance(release, (str, int, float))
            or not RELEASE_RE.fullmatch(str(release))
        )
    ):
        problems.add(
            "gunicorn_release",
            "(%s) is not a release name" % show(release),
            "use letters, digits, '.', '_', '+' and '-', starting with a letter or digit, at most 128 characters",
        )
    rollback = get("gunicorn_rollback_release")
    if (
        action == "rollback"
        and rollback not in (None, "")
        and (
            isinstance(rollback, bool)
            or not isinstance(rollback, (str, int, float))
            or not RELEASE_RE.fullmatch(str(rollback))
        )
    ):
        problems.add(
            "gunicorn_rollback_release",
            "(%s) is not a release name" % show(rollback),
            "give a release directory name (letters, digits, '.', '_', '+', '-'), or leave it unset to roll back to "
            "the previous finished release",
        )
    package = get("gunicorn_app_package")
    if (
        package not in (None, "")
        and action in ("upgrade", "deploy")
        and (not is_text(package) or not PACKAGE_NAME_RE.fullmatch(text(package)))
    ):
        problems.add(
            "gunicorn_app_package",
            "(%s) is not a package name" % show(package),
            "give the app's distribution name, e.g. myapi or myapi[extra]",
        )
        package = None
    if action == "upgrade" and release not in (None, ""):
        check_upgrade_packages(problems, package, get("gunicorn_app_packages"), release)

    summary = get("gunicorn_summary_file")
    if is_text(summary) and summary and not CONTROL_RE.search(text(summary)):
        directory = os.path.dirname(text(summary)) or "."
        if not os.path.isdir(directory) or os.path.isdir(text(summary)):
            problems.add(
                "gunicorn_summary_file",
                "(%s) is not a file path in an existing directory on the controller" % show(summary),
                "the rollout writes its JSON summary there",
            )
    return problems.items


def check_upgrade_packages(problems, package, packages, release):
    """The packages an upgrade installs must pin its release.

    ``packages`` is gunicorn_app_packages as the host's turn will see it: [package==release] when
    gunicorn_app_package is given, unless an extra var gunicorn_app_packages beats the playbook's set_fact.
    """
    built = ["%s==%s" % (text(package), release)] if package else []
    if not package and (packages is None or packages == [] or packages == ""):
        problems.add(
            "gunicorn_app_package",
            "is not set and gunicorn_app_packages is empty",
            "name the app's package, e.g. -e gunicorn_app_package=myapi (the playbook installs myapi==%s), or give the "
            "full list as gunicorn_app_packages" % release,
        )
        return
    if not is_list(packages):
        return  # the role's checks name a malformed list
    if package and [text(p) if is_text(p) else p for p in packages] != built:
        problems.add(
            "gunicorn_app_packages",
            "(%s) is an extra variable, which the playbook cannot replace with %s" % (show(packages), show(built)),
            'pass -e \'{"gunicorn_app_packages": ["PKG==%s"]}\' after the vars file, or keep '
            "gunicorn_app_packages out of the extra vars and set gunicorn_app_package" % release,
        )
        return
    pin = release_of("", packages)
    if packages and is_text(packages[0]) and "==" in text(packages[0]) and pin != str(release):
        problems.add(
            "gunicorn_app_packages",
            "(%s) pins %s, not release %s" % (show(packages), show(pin), show(str(release))),
            "pin the release (PKG==%s), or set gunicorn_app_package and leave the list to the playbook" % release,
        )
