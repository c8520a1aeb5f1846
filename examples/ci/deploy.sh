#!/bin/sh
# Roll a release of a gunicorn app out with graceful.gunicorn.upgrade, from a CI pipeline.
#
#   GUNICORN_RELEASE=2.4.1 GUNICORN_INSTANCE=api GUNICORN_INVENTORY=inventories/prod.yml sh deploy.sh [ansible-playbook args]
#
# Required environment:
#   GUNICORN_RELEASE         the app package version to roll out (the playbook pins <package>==<release>)
#   GUNICORN_INSTANCE        the instance to upgrade, as deployed by the server role
#   GUNICORN_INVENTORY       inventory file, directory or plugin config (-i)
# Optional environment:
#   GUNICORN_TARGET          host pattern (default: the playbook's, gunicorn_hosts)
#   GUNICORN_APP_PACKAGE     the app's package name (default: the playbook's)
#   GUNICORN_SERIAL          hosts per batch, a number or a percentage (default: the playbook's, 1)
#   GUNICORN_MAX_FAIL_PERCENTAGE, GUNICORN_BAKE_SECONDS, GUNICORN_KEEP_RELEASES
#   GUNICORN_COLLECTION      where the collection comes from: a path (a built .tar.gz or a source checkout)
#                            or a Galaxy requirement such as 'graceful.gunicorn:>=0.1.0,<0.2.0'
#                            (default: graceful.gunicorn from Galaxy)
#   GUNICORN_COLLECTIONS_DIR where to install it (default: ./.ci-collections)
#   GUNICORN_SUMMARY_FILE    the JSON summary, kept as a pipeline artifact (default: ./gunicorn-summary.json)
# Each value must be the whole of a valid value (a release name, an instance name, a host pattern, ...):
# anything else, such as a tag holding '{{', a space or a newline, is refused before Ansible runs (status 64).
# Any arguments are passed on to ansible-playbook (e.g. --limit, -e @vars.yml, --private-key KEY).
#
# Exit status: ansible-playbook's, so a failed rollout fails the pipeline; 64 for a usage error.
set -eu

die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 64
}

[ -n "${GUNICORN_RELEASE:-}" ] || die "GUNICORN_RELEASE is not set"
[ -n "${GUNICORN_INSTANCE:-}" ] || die "GUNICORN_INSTANCE is not set"
[ -n "${GUNICORN_INVENTORY:-}" ] || die "GUNICORN_INVENTORY is not set"
command -v ansible-playbook >/dev/null 2>&1 || die "ansible-playbook not found (pip install 'ansible-core>=2.17')"
command -v python3 >/dev/null 2>&1 || die "python3 not found"

collection=${GUNICORN_COLLECTION:-graceful.gunicorn}
collections_dir=${GUNICORN_COLLECTIONS_DIR:-$PWD/.ci-collections}
summary=${GUNICORN_SUMMARY_FILE:-$PWD/gunicorn-summary.json}
case $summary in
    /*) ;;
    *) summary=$PWD/$summary ;;
esac

# Every value goes to ansible-playbook as data in a vars file (-e @FILE), never as -e key=value text, and only
# once it is the whole of a valid value: a tag or branch name such as '1.0{{ lookup("pipe", "id") }}' would
# otherwise be evaluated by Ansible, and a space in a key=value pair would start another variable. The strings
# are JSON strings marked !unsafe as well, so Ansible never templates them.
vars_file=$(mktemp "${TMPDIR:-/tmp}/gunicorn-deploy-vars.XXXXXX")
trap 'rm -f "$vars_file"' EXIT
GUNICORN_SUMMARY_FILE=$summary python3 - "$vars_file" <<'EOF' || exit 64
import json
import os
import re
import sys

# Whole-string patterns (re.fullmatch): a trailing newline is refused too.
RULES = {
    "GUNICORN_RELEASE": ("gunicorn_release", r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", str),
    "GUNICORN_INSTANCE": ("gunicorn_instance", r"[a-z0-9][a-z0-9_-]{0,39}", str),
    "GUNICORN_TARGET": ("gunicorn_target", r"[A-Za-z0-9_.:&!*,\[\]-]{1,512}", str),
    "GUNICORN_APP_PACKAGE": ("gunicorn_app_package", r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}(\[[A-Za-z0-9,._-]{1,200}\])?", str),
    "GUNICORN_SERIAL": ("gunicorn_serial", r"[1-9][0-9]{0,5}|([1-9][0-9]?|100)%", str),
    "GUNICORN_MAX_FAIL_PERCENTAGE": ("gunicorn_max_fail_percentage", r"[0-9]{1,3}([.][0-9]{1,3})?", float),
    "GUNICORN_BAKE_SECONDS": ("gunicorn_bake_seconds", r"[0-9]{1,5}([.][0-9]{1,3})?", float),
    "GUNICORN_KEEP_RELEASES": ("gunicorn_keep_releases", r"[1-9][0-9]?", int),
    "GUNICORN_SUMMARY_FILE": ("gunicorn_summary_file", r"/[A-Za-z0-9_./+-]{1,1000}", str),
}
values, bad = {}, []
for env, (name, pattern, kind) in RULES.items():
    value = os.environ.get(env, "")
    if value == "":
        continue
    if not re.fullmatch(pattern, value):
        bad.append("%s=%s is not a valid %s" % (env, json.dumps(value), name))
        continue
    values[name] = kind(value)
if bad:
    sys.stderr.write("deploy.sh: refused, nothing was run: %s\n" % "; ".join(bad))
    sys.exit(1)
# YAML, one variable a line: every string is a JSON string (a valid YAML double-quoted scalar) tagged
# !unsafe, so Ansible takes it as text and never as a template, whatever the checks above let through.
with open(sys.argv[1], "w", encoding="utf-8") as out:
    for name, value in values.items():
        if isinstance(value, str):
            out.write("%s: !unsafe %s\n" % (name, json.dumps(value)))
        else:
            out.write("%s: %s\n" % (name, json.dumps(value)))
EOF

# Install the collection where only this job looks, so a stale copy elsewhere cannot shadow it.
# A path is installed as is (--force: the same version number may carry new content).
mkdir -p "$collections_dir"
if [ -e "$collection" ]; then
    printf 'Installing graceful.gunicorn from %s\n' "$collection"
else
    printf 'Installing %s from Galaxy\n' "$collection"
fi
ansible-galaxy collection install --force -p "$collections_dir" "$collection"
ANSIBLE_COLLECTIONS_PATH=$collections_dir
export ANSIBLE_COLLECTIONS_PATH

# A summary left over from an earlier run must not pass for this one.
mkdir -p "$(dirname "$summary")"
rm -f "$summary"

rc=0
ansible-playbook graceful.gunicorn.upgrade -i "$GUNICORN_INVENTORY" -e "@$vars_file" "$@" || rc=$?

if [ -s "$summary" ]; then
    printf '\nSummary (%s):\n' "$summary"
    python3 - "$summary" <<'EOF' || true
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    summary = json.load(f)
print(f"instance {summary.get('instance')} -> {summary.get('target_release')}: {'ok' if summary.get('ok') else 'FAILED'}")
for host, h in sorted((summary.get("hosts") or {}).items()):
    line = f"  {host:<30} {h.get('status', '?'):<12} release={h.get('release') or '-'} previous={h.get('previous') or '-'}"
    if h.get("failed_phase"):
        line += f" failed_phase={h['failed_phase']}"
    if h.get("message"):
        line += f" ({h['message']})"
    print(line)
EOF
else
    printf '\nNo summary was written to %s (the run ended before the summary play, or ran with --syntax-check, --list-hosts and the like).\n' "$summary" >&2
fi

if [ "$rc" -ne 0 ]; then
    printf 'deploy.sh: rollout of %s %s failed (ansible-playbook exit status %s)\n' \
        "$GUNICORN_INSTANCE" "$GUNICORN_RELEASE" "$rc" >&2
fi
exit "$rc"
