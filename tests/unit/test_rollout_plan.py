"""graceful.gunicorn.rollout_plan: what a host's turn does, from the stage play's probe of the host."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.gunicorn.plugins.filter.rollout_plan import parse_probe, rollout_plan

ENV = "/etc/gunicorn/api/environment"
CONFIG = "/etc/gunicorn/api/gunicorn.conf.py"
MANIFEST = "/etc/gunicorn/api/instance.json"
UNIT = "/etc/systemd/system/gunicorn-api.service"
SOCKET = "/etc/systemd/system/gunicorn-api-listen-0123abcd.socket"
RELEASES = "/srv/gunicorn/api/releases"


def owned(sha1):
    return {"sha1": sha1, "mode": "0640", "owner": "root", "group": "api"}


def wanted(release="2.0.0", sockets=False):
    files = {
        ENV: owned("e" * 40),
        CONFIG: owned("c" * 40),
        MANIFEST: owned("m" * 40),
        UNIT: {"sha1": "u" * 40, "mode": "0644", "owner": "root", "group": "root"},
    }
    if sockets:
        files[SOCKET] = {"sha1": "s" * 40, "mode": "0644", "owner": "root", "group": "root"}
    return {
        "files": files,
        "release_files": [CONFIG, MANIFEST],
        "environment_file": ENV,
        "socket_units": [SOCKET] if sockets else [],
        "socket_activation": sockets,
        "service_enabled": True,
        "release": release,
        "release_dir": f"{RELEASES}/{release}",
        "installed": "f" * 64,
    }


def probe(
    current="2.0.0", active="active", listeners="no", marker="no", installed="f" * 64, files=None, sockets=(),
    enabled="enabled",
):  # fmt: skip
    """The probe's output for a host that has exactly what wanted() asks for, unless told otherwise."""
    lines = [
        f"active={active}",
        f"enabled={enabled}",
        f"listeners={listeners}",
        f"current={RELEASES}/{current}" if current else "current=",
        f"marker={marker}",
        f"installed={installed}",
    ]
    lines += [f"socket={path}" for path in sockets]
    observed = {}
    for path, want in wanted(sockets=bool(sockets))["files"].items():
        observed[path] = (want["mode"].lstrip("0"), want["owner"], want["group"], want["sha1"])
    observed.update(files or {})
    for path, fields in observed.items():
        lines.append("file=" + "\t".join((path, "-") if fields is None else (path, *fields)))
    return "\n".join(lines) + "\n"


def test_a_host_that_runs_exactly_what_is_wanted_has_nothing_to_change():
    assert rollout_plan(probe(), wanted(), master_release="2.0.0") == {
        "plan": "none",
        "reasons": [],
        "environment": False,
        "summary": "nothing to change",
    }


def test_a_staged_release_that_changes_only_what_names_the_release_is_a_switch():
    changed = {CONFIG: ("640", "root", "api", "1" * 40), MANIFEST: ("640", "root", "api", "2" * 40)}
    plan = rollout_plan(probe(current="1.0.0", files=changed), wanted(), master_release="1.0.0", staged=True)
    assert plan == {
        "plan": "switch",
        "reasons": [],
        "environment": False,
        "summary": "switch to the staged release",
    }


def test_a_release_this_rollout_did_not_stage_runs_the_whole_role():
    plan = rollout_plan(probe(current="1.0.0"), wanted(), master_release="1.0.0", staged=False)
    assert plan["plan"] == "full"
    assert plan["reasons"] == ["the release is not staged by this rollout"]
    assert plan["summary"] == "the whole role, the release is not staged by this rollout"


@pytest.mark.parametrize(
    "observed, reason",
    [
        (probe(active="inactive"), "the service is inactive"),
        (probe(marker="yes"), "a restart is owed"),
        (probe(installed=""), "the release is not installed as wanted"),
        (probe(installed="0" * 64), "the release is not installed as wanted"),
        (probe(files={UNIT: None}), "gunicorn-api.service differs"),
        (probe(sockets=[SOCKET]), "the socket units differ"),
    ],
)
def test_anything_but_the_release_that_differs_runs_the_whole_role(observed, reason):
    for staged, current in ((False, "2.0.0"), (True, "1.0.0")):
        observed_here = observed.replace(f"current={RELEASES}/2.0.0", f"current={RELEASES}/{current}")
        plan = rollout_plan(observed_here, wanted(), master_release="2.0.0", staged=staged)
        assert plan["plan"] == "full"
        assert reason in plan["reasons"]


def test_socket_activation_needs_the_master_to_hold_the_listeners():
    held = probe(listeners="yes", sockets=[SOCKET])
    assert rollout_plan(held, wanted(sockets=True), master_release="2.0.0")["plan"] == "none"
    plan = rollout_plan(probe(listeners="no", sockets=[SOCKET]), wanted(sockets=True), master_release="2.0.0")
    assert (plan["plan"], plan["reasons"]) == ("full", ["the master does not hold systemd's listeners"])


def test_a_stale_socket_unit_runs_the_whole_role():
    stale = "/etc/systemd/system/gunicorn-api-listen-ffffffff.socket"
    plan = rollout_plan(probe(listeners="yes", sockets=[SOCKET, stale]), wanted(sockets=True), master_release="2.0.0")
    assert plan["reasons"] == ["the socket units differ"]


def test_the_serving_release_with_a_new_configuration_runs_the_whole_role():
    plan = rollout_plan(probe(files={CONFIG: ("640", "root", "api", "0" * 40)}), wanted(), master_release="2.0.0")
    assert (plan["plan"], plan["reasons"]) == ("full", ["the configuration differs"])


def test_a_master_on_another_release_than_current_runs_the_whole_role():
    plan = rollout_plan(probe(), wanted(), master_release="1.0.0")
    assert (plan["plan"], plan["reasons"]) == ("full", ["the master runs 1.0.0"])
    assert rollout_plan(probe(), wanted(), master_release="")["reasons"] == ["the master runs an unknown release"]


def test_an_upgrade_in_flight_or_check_mode_runs_the_whole_role():
    assert rollout_plan(probe(), wanted(), master_release="2.0.0", upgrade_in_flight=True)["plan"] == "full"
    plan = rollout_plan(probe(), wanted(), master_release="2.0.0", check_mode=True)
    assert (plan["plan"], plan["reasons"]) == ("full", ["check mode"])


def test_a_probe_that_says_nothing_runs_the_whole_role():
    plan = rollout_plan("", wanted(), master_release="2.0.0", staged=True)
    assert plan["plan"] == "full"
    assert "the service is unknown" in plan["reasons"]


def test_the_probe_is_read_line_by_line():
    observed = parse_probe(f"active=active\nsocket={SOCKET}\nfile={ENV}\t640\troot\tapi\t{'e' * 40}\nfile={UNIT}\t-\n")
    assert observed["active"] == "active"
    assert observed["sockets"] == {SOCKET}
    assert observed["files"] == {ENV: {"mode": "640", "owner": "root", "group": "api", "sha1": "e" * 40}, UNIT: None}


def test_a_malformed_file_line_is_refused():
    with pytest.raises(AnsibleFilterError, match="rollout_plan"):
        parse_probe(f"file={ENV}\t640\n")
    with pytest.raises(AnsibleFilterError, match="rollout_plan: wanted has no"):
        rollout_plan("", {"files": {}})


def test_the_summary_names_the_first_reason_and_counts_the_others():
    plan = rollout_plan(probe(active="inactive", marker="yes"), wanted(), master_release="2.0.0")
    assert plan["summary"] == "the whole role, the service is inactive (and 1 more)"


@pytest.mark.parametrize(
    "environment",
    [("640", "root", "api", "0" * 40), ("644", "root", "api", "e" * 40), ("640", "api", "api", "e" * 40), None],
)
def test_a_new_environment_alone_is_applied_without_the_whole_role(environment):
    plan = rollout_plan(probe(files={ENV: environment}), wanted(), master_release="2.0.0")
    assert plan == {"plan": "environment", "reasons": [], "environment": True, "summary": "apply the new environment"}
    changed = {ENV: environment, CONFIG: ("640", "root", "api", "1" * 40)}
    plan = rollout_plan(probe(current="1.0.0", files=changed), wanted(), master_release="1.0.0", staged=True)
    assert (plan["plan"], plan["environment"]) == ("switch", True)
    assert plan["summary"] == "switch to the staged release, with the new environment"


def test_a_new_environment_with_another_change_runs_the_whole_role_and_says_both():
    observed = probe(files={ENV: ("640", "root", "api", "0" * 40), UNIT: ("644", "root", "root", "0" * 40)})
    plan = rollout_plan(observed, wanted(), master_release="2.0.0")
    assert plan["plan"] == "full"
    assert plan["reasons"] == ["gunicorn-api.service differs", "environment differs"]
    assert plan["environment"] is False


def test_the_service_must_start_at_boot_as_wanted():
    plan = rollout_plan(probe(enabled="disabled"), wanted(), master_release="2.0.0")
    assert (plan["plan"], plan["reasons"]) == ("full", ["the service is disabled at boot, not enabled"])
    not_at_boot = dict(wanted(), service_enabled=False)
    assert rollout_plan(probe(enabled="disabled"), not_at_boot, master_release="2.0.0")["plan"] == "none"
    plan = rollout_plan(probe(enabled="enabled"), not_at_boot, master_release="2.0.0")
    assert plan["reasons"] == ["the service is enabled at boot, not disabled"]


def test_an_app_that_fails_its_health_check_runs_the_whole_role():
    for staged, current in ((False, "2.0.0"), (True, "1.0.0")):
        plan = rollout_plan(probe(current=current), wanted(), master_release="2.0.0", healthy=False, staged=staged)
        assert (plan["plan"], plan["reasons"]) == ("full", ["the app does not pass its health check"])


def test_a_malformed_line_stays_out_of_the_error():
    with pytest.raises(AnsibleFilterError) as refused:
        parse_probe(f"file={ENV}\tsecret-sha1\n")
    assert "secret-sha1" not in str(refused.value)
