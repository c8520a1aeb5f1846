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

# Optional settings become extra vars only when set, so the playbook's defaults apply otherwise.
[ -z "${GUNICORN_SERIAL:-}" ] || set -- -e "gunicorn_serial=$GUNICORN_SERIAL" "$@"
[ -z "${GUNICORN_TARGET:-}" ] || set -- -e "gunicorn_target=$GUNICORN_TARGET" "$@"
[ -z "${GUNICORN_APP_PACKAGE:-}" ] || set -- -e "gunicorn_app_package=$GUNICORN_APP_PACKAGE" "$@"
[ -z "${GUNICORN_MAX_FAIL_PERCENTAGE:-}" ] || set -- -e "gunicorn_max_fail_percentage=$GUNICORN_MAX_FAIL_PERCENTAGE" "$@"
[ -z "${GUNICORN_BAKE_SECONDS:-}" ] || set -- -e "gunicorn_bake_seconds=$GUNICORN_BAKE_SECONDS" "$@"
[ -z "${GUNICORN_KEEP_RELEASES:-}" ] || set -- -e "gunicorn_keep_releases=$GUNICORN_KEEP_RELEASES" "$@"

rc=0
ansible-playbook graceful.gunicorn.upgrade \
    -i "$GUNICORN_INVENTORY" \
    -e "gunicorn_instance=$GUNICORN_INSTANCE" \
    -e "gunicorn_release=$GUNICORN_RELEASE" \
    -e "gunicorn_summary_file=$summary" \
    "$@" || rc=$?

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
