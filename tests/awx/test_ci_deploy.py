"""examples/ci/deploy.sh as a pipeline step, on the AWX session's three lab hosts.

The step runs as a pipeline runs it: `sh examples/ci/deploy.sh` with the GUNICORN_* variables, the collection
installed by the script from this checkout (a path, so no network), and the inventory the session's deploy
job used (its group variables, and the second host's environment that makes BROKEN_RELEASE fail to import).
ansible-galaxy, ansible-playbook, SSH, systemd and gunicorn are all real. The only addition is a recording
wrapper in front of ansible-playbook, so a test can tell whether the script got as far as running it.

The lab is shared with test_awx_jobs.py, which runs first when the whole directory runs: each test reads the
fleet's state before the step instead of assuming it.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess

import pytest
from harness import APP_PACKAGE, BIN, BROKEN_RELEASE, INSTANCE, JOB_TIMEOUT, OUT, REPO

DEPLOY_SH = REPO / "examples" / "ci" / "deploy.sh"
# The inventory file the session's deploy job ran with (written by run_job in conftest.py).
JOB_INVENTORY = OUT / "deploy" / "inventory" / "hosts"
RECORDING_PLAYBOOK = """#!/bin/sh
echo run >> "{record}"
exec "{real}" "$@"
"""


@pytest.fixture
def run_step(deployed, tmp_path):
    """run_step(**GUNICORN_* overrides) -> (CompletedProcess, ran_playbook: bool, summary path)."""
    assert JOB_INVENTORY.is_file(), f"the deploy job's inventory is missing: {JOB_INVENTORY}"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    record = tmp_path / "ansible-playbook-runs"
    wrapper = wrappers / "ansible-playbook"
    wrapper.write_text(RECORDING_PLAYBOOK.format(record=record, real=BIN / "ansible-playbook"))
    wrapper.chmod(stat.S_IRWXU)
    summary = tmp_path / "summary.json"
    work = tmp_path / "work"
    work.mkdir()

    def run(**overrides):
        record.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "GUNICORN_"))}
        env.update(
            PATH=f"{wrappers}{os.pathsep}{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg"),
            ANSIBLE_FORCE_COLOR="0",
            GUNICORN_RELEASE=BROKEN_RELEASE,
            GUNICORN_INSTANCE=INSTANCE,
            GUNICORN_APP_PACKAGE=APP_PACKAGE,
            GUNICORN_INVENTORY=str(JOB_INVENTORY),
            GUNICORN_BAKE_SECONDS="2",
            GUNICORN_COLLECTION=str(REPO),
            GUNICORN_COLLECTIONS_DIR=str(tmp_path / "collections"),
            GUNICORN_SUMMARY_FILE=str(summary),
            TMPDIR=str(tmp_path),
        )
        env.update(overrides)
        print("$ sh " + str(DEPLOY_SH) + " " + " ".join(f"{k}={v!r}" for k, v in overrides.items()), flush=True)
        proc = subprocess.Popen(["sh", str(DEPLOY_SH)], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        try:
            out, err = proc.communicate(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"deploy.sh did not finish in {JOB_TIMEOUT}s\n{out[-4000:]}\n{err[-2000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        print(out[-4000:], err[-2000:], sep="\n", flush=True)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return result, record.exists(), summary

    return run


def test_failing_rollout_fails_the_step_and_keeps_the_summary(deployed, run_step):
    lab = deployed
    first, second, third = lab.names
    before = lab.fleet()
    assert before[second]["served"] != BROKEN_RELEASE, f"{second} already serves {BROKEN_RELEASE}: {before}"

    # One host a batch (the playbook's default) and no failure budget: the release is staged on every host
    # first, the second host cannot import BROKEN_RELEASE there, and the rollout stops before any host switches.
    result, ran_playbook, summary_file = run_step()
    after = lab.fleet()

    assert ran_playbook, "deploy.sh never ran ansible-playbook"
    assert result.returncode not in (0, 64), f"the step must fail as the rollout did (exit {result.returncode})"
    assert f"rollout of {INSTANCE} {BROKEN_RELEASE} failed" in result.stderr
    assert summary_file.is_file(), f"no JSON summary kept at {summary_file}"
    summary = json.loads(summary_file.read_text())
    assert summary.get("ok") is False, summary
    assert summary.get("target_release") == BROKEN_RELEASE, summary
    hosts = summary.get("hosts") or {}
    assert set(hosts) == set(lab.names), summary
    assert hosts[second].get("status") == "failed", hosts[second]
    assert hosts[second].get("failed_phase") == "stage", hosts[second]
    for host in (first, third):
        assert hosts[host].get("status") == "untouched", hosts[host]
        assert hosts[host].get("release") == before[host]["served"], hosts[host]

    # Every host still answers over HTTP (lab.served checks the route through the lab's bridge first).
    assert after[second]["served"] == before[second]["served"], f"{second}: {before[second]} -> {after[second]}"
    for host in (first, third):
        assert after[host] == before[host], f"{host} was touched: {before[host]} -> {after[host]}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GUNICORN_RELEASE", '2.0.0{{ lookup("pipe", "touch MARKER") }}'),
        ("GUNICORN_RELEASE", "2.0.0 -e gunicorn_serial=100%"),
        ("GUNICORN_RELEASE", "2.0.0\n"),
        ("GUNICORN_INSTANCE", 'demo{{ lookup("pipe", "touch MARKER") }}'),
        ("GUNICORN_INSTANCE", "demo other"),
    ],
    ids=["release-template", "release-space", "release-newline", "instance-template", "instance-space"],
)
def test_a_ref_that_is_not_a_whole_value_is_refused(deployed, run_step, tmp_path, variable, value):
    lab = deployed
    marker = tmp_path / "evaluated"
    before = lab.fleet()

    result, ran_playbook, summary_file = run_step(**{variable: value.replace("MARKER", str(marker))})
    after = lab.fleet()

    assert result.returncode == 64, f"exit {result.returncode}, expected 64 (refused)\n{result.stderr}"
    assert f"{variable}=" in result.stderr and "refused" in result.stderr, result.stderr
    assert not ran_playbook, "ansible-playbook ran for a refused value"
    assert "Installing" not in result.stdout, "the collection was installed for a refused value"
    assert not marker.exists(), f"the value was evaluated: {marker} exists"
    assert not summary_file.exists()
    assert after == before, f"a host changed: {before} -> {after}"
