"""AWX jobs of the examples/awx wrappers on three lab hosts: a Limit, a failed migration, a relaunch, unreachable hosts.

Each test launches what an AWX user launches (the upgrade job template with survey-upgrade.json's
answers, optionally a Limit) and asserts what AWX shows for the job: its exit status, the recap's
failed hosts (which "relaunch on failed hosts" picks) and the job stats artifact
`gunicorn_rollout_summary`, then what the hosts really run (GET /version and the unit's MainPID).
Every check of a test is evaluated and all failed ones are reported together.

The tests share one lab, deployed once with 1.0.0, and run in file order; each reads the fleet's state
before its job instead of assuming what the previous test left.
"""

from __future__ import annotations

import json

import pytest
from harness import APP_PACKAGE, BROKEN_RELEASE, INSTANCE, OUT, REPO, survey_answers


class Checks:
    """Named checks evaluated in full; the test fails listing every one that did not hold."""

    def __init__(self, job):
        self.job = job
        self.failed = []

    def __call__(self, condition: bool, message: str) -> bool:
        print(f"  {'ok  ' if condition else 'FAIL'} {message}", flush=True)
        if not condition:
            self.failed.append(message)
        return bool(condition)

    def verify(self) -> None:
        if self.failed:
            stats = {k: self.job.stats.get(k) for k in ("ok", "changed", "failures", "dark", "rescued", "skipped")}
            pytest.fail(
                f"{self.job.name}: {len(self.failed)} check(s) failed:\n- "
                + "\n- ".join(self.failed)
                + f"\nrecap: {json.dumps(stats)}\nartifacts: {self.job.artifacts}\n--- output tail:\n{self.job.tail()}",
                pytrace=False,
            )


def upgrade_answers(release: str, **answers) -> dict:
    return survey_answers(
        gunicorn_instance=INSTANCE,
        gunicorn_release=release,
        gunicorn_app_package=APP_PACKAGE,
        gunicorn_bake_seconds=2,
        **answers,
    )


def summary_hosts(job) -> dict:
    return (job.summary or {}).get("hosts") or {}


MIGRATE_TASKS = REPO / "examples" / "run_once" / "migrate.yml"
MIGRATION_BLOCKER = "/etc/graceful-awx-block-migration"
MIGRATION_MARK = "/tmp/graceful-awx-migration.json"
# The "migration": refused while the blocker exists on the host, else it records the release's code version and what
# `current` named while it ran.
MIGRATION = (
    "import json, os, sys, graceful_demo_asgi as app; "
    f"os.path.exists({MIGRATION_BLOCKER!r}) and sys.exit('the schema migration failed: blocked'); "
    "mark = {'version': app.__version__, 'current': os.readlink('/srv/gunicorn/demo/current')}; "
    f"json.dump(mark, open({MIGRATION_MARK!r}, 'w'))"
)


def migration_host_vars(lab) -> dict:
    """The run-once migration before the first switch, set in the inventory as AWX users must (not in a survey)."""
    hook = {"gunicorn_before_switch_tasks": str(MIGRATE_TASKS), "gunicorn_migrate_argv": ["python", "-c", MIGRATION]}
    return {host: dict(hook) for host in lab.names}


def test_limit_to_one_host_with_a_migration_that_fails_then_passes_on_relaunch(deployed, run_job):
    lab = deployed
    first, second, third = lab.names
    before = lab.fleet()
    lab.ssh(first, "rm", "-f", MIGRATION_MARK)
    lab.ssh(first, "touch", MIGRATION_BLOCKER)
    try:
        failed = run_job(
            "limit-migration-fails",
            "upgrade.yml",
            upgrade_answers("2.0.0"),
            limit=first,
            host_overrides=migration_host_vars(lab),
        )
    finally:
        lab.ssh(first, "rm", "-f", MIGRATION_BLOCKER)
    between = lab.fleet()

    check = Checks(failed)
    check(failed.rc != 0 and failed.status == "failed", f"the job fails (rc {failed.rc}, status {failed.status})")
    check(failed.failed_hosts == {first}, f"the recap's failed hosts are {first} alone ({sorted(failed.failed_hosts)})")
    hook = ((failed.summary or {}).get("hooks") or {}).get("before_switch") or {}
    check(
        hook.get("status") == "failed" and hook.get("host") == first and "blocked" in hook.get("message", ""),
        f"the summary says the migration failed on {first}, and why ({hook})",
    )
    mine = summary_hosts(failed).get(first, {})
    check(
        mine.get("status") == "failed" and mine.get("failed_phase") == "before_switch",
        f"the summary has {first} failed before the switch ({mine})",
    )
    for host in lab.names:
        check(between[host] == before[host], f"{host} untouched: {before[host]} -> {between[host]}")
    check.verify()

    # AWX's "relaunch on failed hosts", once the migration can pass: the same job, limited to the failed hosts.
    job = run_job(
        "limit-one-host",
        "upgrade.yml",
        upgrade_answers("2.0.0"),
        limit=",".join(sorted(failed.failed_hosts)),
        host_overrides=migration_host_vars(lab),
    )
    after = lab.fleet()

    check = Checks(job)
    check(job.rc == 0 and job.status == "successful", f"the job succeeds (rc {job.rc}, status {job.status})")
    check(job.failed_hosts == set(), f"no host failed in the recap (failed: {sorted(job.failed_hosts)})")
    acted = job.hosts_acted_on & set(lab.names)
    check(acted == {first}, f"tasks ran on {first} only among the lab hosts (ran on {sorted(acted)})")
    changed = job.recap("changed") & set(lab.names)
    check(changed == {first}, f"only {first} changed in the recap (changed: {sorted(changed)})")
    check(after[first]["served"] == "2.0.0", f"{first} serves 2.0.0 (serves {after[first]['served']})")
    check(after[first]["main_pid"] != before[first]["main_pid"], f"{first} has a new master")
    for host in (second, third):
        check(after[host] == before[host], f"{host} untouched: {before[host]} -> {after[host]}")
    mark = json.loads(lab.ssh(first, "cat", MIGRATION_MARK) or "{}")
    check(
        mark.get("version") == "2.0.0" and mark.get("current", "").endswith("/1.0.0"),
        f"the migration ran on {first} with the 2.0.0 code while current named 1.0.0 ({mark})",
    )
    hook = ((job.summary or {}).get("hooks") or {}).get("before_switch") or {}
    check(hook.get("status") == "ok" and hook.get("host") == first, f"the summary says the migration passed ({hook})")
    check(job.summary is not None, "the job stats hold gunicorn_rollout_summary")
    hosts = summary_hosts(job)
    check(set(hosts) == {first}, f"the summary names {first} alone (names {sorted(hosts)})")
    mine = hosts.get(first, {})
    check(
        mine.get("status") == "upgraded" and mine.get("release") == "2.0.0",
        f"the summary reports {first} upgraded to 2.0.0 ({mine})",
    )
    check((job.summary or {}).get("ok") is True, f"the summary says ok ({(job.summary or {}).get('ok')!r})")
    check.verify()


def test_unreachable_host_stops_the_rollout_before_any_host_switches(deployed, run_job):
    lab = deployed
    first, second, third = lab.names
    before = lab.fleet()
    summary_file = OUT / "unreachable-summary.json"
    # A job template's extra variables, beside the survey's answers. One host a batch: the release is staged on
    # every host before the first switch.
    extravars = {**upgrade_answers("2.0.0", gunicorn_serial="1"), "gunicorn_summary_file": str(summary_file)}
    # The second host's address is one on the lab's bridge that no container holds (routed via the bridge,
    # checked by run_job), so SSH to it fails as to a host that is down.
    job = run_job(
        "unreachable-middle",
        "upgrade.yml",
        extravars,
        host_overrides={second: {"ansible_host": lab.network_unused}},
    )
    after = lab.fleet()

    check = Checks(job)
    check(job.rc != 0 and job.status == "failed", f"the job fails (rc {job.rc}, status {job.status})")
    check(job.recap("dark") == {second}, f"the recap has {second} unreachable (dark: {sorted(job.recap('dark'))})")
    check(job.failed_hosts == {second}, f"the recap's failed hosts are {second} alone ({sorted(job.failed_hosts)})")
    check("staged on 2 of 3 hosts" in job.stdout, "the stage play says how far it got")
    check(job.summary is not None, "the job stats hold gunicorn_rollout_summary")
    check(summary_file.exists(), f"the JSON summary is written to {summary_file}")
    if summary_file.exists() and job.summary is not None:
        check(json.loads(summary_file.read_text()) == job.summary, "the JSON summary equals the job stats")
    hosts = summary_hosts(job)
    check(set(hosts) == set(lab.names), f"the summary reports all three hosts ({sorted(hosts)})")
    check(
        hosts.get(second, {}).get("status") == "unreachable" and hosts.get(second, {}).get("failed_phase") == "stage",
        f"the summary has {second} unreachable while staging ({hosts.get(second)})",
    )
    # The failure budget is the survey's default, 0: the rollout stops before any host switches. A host that
    # already serves 2.0.0 (the first one, after test_limit_to_one_host) has nothing to stage.
    for host in (first, third):
        mine = hosts.get(host, {})
        staged = before[host]["served"] != "2.0.0"
        check(
            mine.get("status") == "untouched"
            and mine.get("release") == before[host]["served"]
            and ("staged there" in mine.get("message", "")) == staged,
            f"the summary reports {host} untouched on {before[host]['served']}"
            f"{', the release staged there' if staged else ''} ({mine})",
        )
        check(after[host] == before[host], f"{host} untouched: {before[host]} -> {after[host]}")
    check((job.summary or {}).get("ok") is False, f"the summary says not ok ({(job.summary or {}).get('ok')!r})")
    check(after[second] == before[second], f"{second} untouched: {before[second]} -> {after[second]}")
    check.verify()


def test_failed_host_then_relaunch_on_failed_hosts(deployed, run_job):
    lab = deployed
    first, second, third = lab.names
    before = lab.fleet()
    # A failure budget of 100%: the rollout goes on past the failed host, so the third host is upgraded
    # and only the second one, which cannot import BROKEN_RELEASE, fails.
    extravars = upgrade_answers(BROKEN_RELEASE, gunicorn_serial="1", gunicorn_max_fail_percentage=100)
    job = run_job("failed-host", "upgrade.yml", extravars)
    after = lab.fleet()

    check = Checks(job)
    check(job.rc != 0 and job.status == "failed", f"the job fails (rc {job.rc}, status {job.status})")
    check(job.failed_hosts == {second}, f"the recap's failed hosts are {second} alone ({sorted(job.failed_hosts)})")
    check(second in job.recap("failures"), f"{second} counts a failure in the recap, not a rescue")
    check(job.summary is not None, "the job stats hold gunicorn_rollout_summary")
    hosts = summary_hosts(job)
    bad = hosts.get(second, {})
    check(
        bad.get("status") == "failed" and bad.get("failed_phase") == "stage",
        f"the summary has {second} failed while staging, where gunicorn could not import the release ({bad})",
    )
    for host in (first, third):
        check(
            hosts.get(host, {}).get("status") == "upgraded" and hosts.get(host, {}).get("release") == BROKEN_RELEASE,
            f"the summary has {host} upgraded to {BROKEN_RELEASE} ({hosts.get(host)})",
        )
        check(after[host]["served"] == BROKEN_RELEASE, f"{host} serves {BROKEN_RELEASE} ({after[host]['served']})")
    check(
        after[second]["served"] == before[second]["served"],
        f"{second} still serves {before[second]['served']} ({after[second]['served']})",
    )

    # AWX's "relaunch on failed hosts": the same job, limited to the failed hosts of this one's recap.
    relaunch_limit = ",".join(sorted(job.failed_hosts))
    check(relaunch_limit == second, f"the relaunch limit is exactly {second} ({relaunch_limit!r})")
    if not relaunch_limit:
        check.verify()
        pytest.fail("no failed host in the recap: AWX refuses to relaunch on failed hosts")
    # The second host's environment still breaks the release: the relaunch fails again, on it alone.
    relaunch = run_job("relaunch-failed", "upgrade.yml", extravars, limit=relaunch_limit)
    final = lab.fleet()
    acted = relaunch.hosts_acted_on & set(lab.names)
    check(acted == {second}, f"the relaunch ran tasks on {second} alone among the lab hosts ({sorted(acted)})")
    for host in (first, third):
        check(final[host] == after[host], f"the relaunch left {host} alone: {after[host]} -> {final[host]}")
    check(relaunch.rc != 0 and relaunch.status == "failed", f"the relaunch fails (rc {relaunch.rc})")
    check(relaunch.failed_hosts == {second}, f"the relaunch's failed hosts: {sorted(relaunch.failed_hosts)}")
    relaunch_hosts = summary_hosts(relaunch)
    check(set(relaunch_hosts) == {second}, f"the relaunch's summary names {second} alone ({sorted(relaunch_hosts)})")
    check.verify()
