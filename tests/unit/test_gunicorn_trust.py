"""Every trust decision of plugins/module_utils/gunicorn_trust.py, table-driven over facts, stat results and files.

The judges are pure; the signalling tests use real `sleep` processes this test starts and stops by PID.
"""

import os
import signal
import stat
import subprocess
import time
from types import SimpleNamespace

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_trust as trust
from ansible_collections.graceful.gunicorn.plugins.modules import gunicorn_upgrade as upgrade

CONFIG = "/etc/gunicorn/shop/gunicorn.conf.py"
UNIT_CG = "/system.slice/gunicorn-shop.service"
PYTHON = "/usr/bin/python3.11"


def fact(**changes):
    result = {
        "pid": 100,
        "ppid": 1,
        "state": "S",
        "starttime": 5000,
        "uid": 998,
        "exe": PYTHON,
        "cgroup": UNIT_CG,
        "argv": ["/srv/gunicorn/shop/releases/1/venv/bin/python", "/srv/.../bin/graceful-gunicorn", "-c", CONFIG],
        "cwd": "/srv/gunicorn/shop/releases/1",
    }
    result.update(changes)
    return result


UNIT = {"name": "gunicorn-shop.service", "checked": True, "main_pid": 100, "control_group": UNIT_CG}
NO_UNIT = {"name": None, "checked": False, "reason": "systemd is not running on this host"}


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("0::/system.slice/gunicorn-shop.service\n", UNIT_CG),
        ("12:pids:/x\n1:name=systemd:/system.slice/a.service\n", "/system.slice/a.service"),
        ("", None),
    ],
)
def test_parse_cgroup(text, path):
    assert trust.parse_cgroup(text) == path


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        (UNIT_CG, True),
        (UNIT_CG + "/payload", True),
        ("/system.slice/gunicorn-shop.service-evil", False),
        ("/user.slice/user-998.slice/session-3.scope", False),
        (None, False),
    ],
)
def test_in_cgroup(path, inside):
    assert trust.in_cgroup(path, UNIT_CG) is inside


MASTER_CASES = [
    ("the unit's MainPID, config on the command line", fact(), UNIT, {}, None),
    ("no unit: the pidfile's master with its config", fact(), NO_UNIT, {}, None),
    ("not the MainPID (a foreign process named like the master)", fact(pid=555), UNIT, {}, "not the MainPID"),
    ("outside the unit's cgroup", fact(cgroup="/user.slice/x.scope"), UNIT, {}, "outside unit"),
    ("loaded unit without a main process", fact(), dict(UNIT, main_pid=None), {}, "has no main process"),
    ("another config", fact(argv=["/v/bin/gunicorn", "-c", "/etc/gunicorn/o/g.py"]), UNIT, {}, "runs config"),
    ("custom title, under the unit: MainPID and cgroup vouch", fact(argv=["gunicorn: master [shop]"]), UNIT, {}, None),
    (
        "custom title without a unit: config unconfirmed",
        fact(argv=["gunicorn: master [shop]"]),
        NO_UNIT,
        {},
        "does not confirm config",
    ),
    ("no -c without a unit", fact(argv=["/v/bin/gunicorn", "app:app"]), NO_UNIT, {}, "does not confirm config"),
    ("a relative -c without a unit", fact(argv=["/v/bin/gunicorn", "-c", "g.py"]), NO_UNIT, {}, "relative -c"),
    ("not gunicorn", fact(argv=["/usr/bin/sleep", "1000"]), NO_UNIT, {}, "not gunicorn"),
    ("a worker's title", fact(argv=["gunicorn: worker [shop]"]), NO_UNIT, {}, "worker"),
    (
        "started after its pidfile",
        fact(),
        NO_UNIT,
        {"started_since_boot": 500.0, "pidfile_since_boot": 100.0},
        "reused",
    ),
    ("gone", None, NO_UNIT, {}, "not running"),
    ("the manifest's service user", fact(), UNIT, {"expected_uid": 998}, None),
    ("root posing as the master", fact(uid=0), UNIT, {"expected_uid": 998}, "not the service user's uid 998"),
    ("another user's process", fact(uid=1000), NO_UNIT, {"expected_uid": 998}, "uid 1000"),
]


@pytest.mark.parametrize(
    ("fact_", "unit", "kwargs", "fragment"), [c[1:] for c in MASTER_CASES], ids=[c[0] for c in MASTER_CASES]
)
def test_judge_master(fact_, unit, kwargs, fragment):
    reason = trust.judge_master(fact_, unit, expected_config=CONFIG, **kwargs)
    if fragment is None:
        assert reason is None
    else:
        assert fragment in reason


OLD = fact()
NEW = fact(pid=200, ppid=100, argv=["gunicorn: master [shop.2]"])
EXES = {PYTHON}

NEW_CASES = [
    ("a child of the old master, same uid, exe, cgroup", NEW, UNIT, None),
    ("same without a unit (no cgroup to compare)", dict(NEW, cgroup="/elsewhere"), NO_UNIT, None),
    ("a victim that is not a child", dict(NEW, ppid=1), UNIT, "not a child of master 100"),
    ("the old master itself", OLD, UNIT, "the old master itself"),
    ("outside the unit's cgroup", dict(NEW, cgroup="/user.slice/u.scope"), UNIT, "outside unit"),
    ("another uid", dict(NEW, uid=0), UNIT, "uid 0"),
    ("another interpreter", dict(NEW, exe="/usr/bin/sleep"), UNIT, "not the release's interpreter"),
    ("an unreadable exe", dict(NEW, exe=None), UNIT, "not the release's interpreter"),
    ("not gunicorn", dict(NEW, argv=["/usr/bin/python3", "evil.py"]), UNIT, "not gunicorn"),
    ("gone", None, UNIT, "not running"),
]


@pytest.mark.parametrize(("fact_", "unit", "fragment"), [c[1:] for c in NEW_CASES], ids=[c[0] for c in NEW_CASES])
def test_judge_new_master(fact_, unit, fragment):
    reason = trust.judge_new_master(fact_, OLD, unit, EXES)
    if fragment is None:
        assert reason is None
    else:
        assert fragment in reason


def test_a_release_venv_interpreter_is_accepted():
    assert (
        trust.judge_new_master(
            dict(NEW, exe="/opt/py3.12/bin/python3.12"), OLD, UNIT, EXES | {"/opt/py3.12/bin/python3.12"}
        )
        is None
    )


WORKER = fact(pid=300, ppid=100, argv=["gunicorn: worker [shop]"])
WORKER_CASES = [
    ("a child of the master", WORKER, None),
    ("not a child", dict(WORKER, ppid=7), "not a child of master 100"),
    ("outside the cgroup", dict(WORKER, cgroup="/x"), "outside unit"),
    ("another uid", dict(WORKER, uid=1), "uid 1"),
]


@pytest.mark.parametrize(("fact_", "fragment"), [c[1:] for c in WORKER_CASES], ids=[c[0] for c in WORKER_CASES])
def test_judge_worker(fact_, fragment):
    reason = trust.judge_worker(fact_, OLD, UNIT)
    assert reason is None if fragment is None else fragment in reason


def test_judge_same_catches_a_reused_pid():
    assert trust.judge_same(fact(), fact()) is None
    assert "another process" in trust.judge_same(fact(starttime=9999), fact())
    assert "not running" in trust.judge_same(None, fact())


# -- paths: a fake lstat over a table of stat results ---------------------------------------------------------------


def st(kind="dir", uid=0, mode=0o755):
    bits = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}[kind]
    return SimpleNamespace(st_mode=bits | mode, st_uid=uid)


def fake_lstat(tree):
    def lstat(path):
        if path not in tree:
            raise FileNotFoundError(2, "No such file or directory", path)
        return tree[path]

    return lstat


GOOD_TREE = {
    "/": st(),
    "/srv": st(),
    "/srv/gunicorn": st(),
    "/srv/gunicorn/shop": st(mode=0o750),
    "/srv/gunicorn/shop/releases": st(mode=0o750),
    "/srv/gunicorn/shop/releases/1": st(mode=0o750),
    "/srv/gunicorn/shop/current": st("link", mode=0o777),
    "/tmp": st(mode=0o1777),
}

RELEASE_CASES = [
    ("a release directory", {}, "1", None),
    ("not a plain name", {}, "../1", "not a plain directory name"),
    ("a name with a newline", {}, "1\n", "not a plain directory name"),
    ("missing", {}, "2", "cannot be read"),
    ("a symlink planted as a release", {"/srv/gunicorn/shop/releases/2": st("link")}, "2", "is a symlink"),
    ("a file", {"/srv/gunicorn/shop/releases/2": st("file")}, "2", "not a directory"),
    ("owned by the service user", {"/srv/gunicorn/shop/releases/2": st(uid=998)}, "2", "not root's"),
    ("a releases tree owned by the service user", {"/srv/gunicorn/shop/releases": st(uid=998)}, "1", "uid 998"),
    (
        "a group-writable releases tree",
        {"/srv/gunicorn/shop/releases": st(mode=0o770)},
        "1",
        "group- or world-writable",
    ),
    ("a symlink component", {"/srv/gunicorn": st("link")}, "1", "symlink component"),
    ("a sticky instance root is not enough", {"/srv/gunicorn/shop": st(mode=0o1777)}, "1", "writable"),
]


@pytest.mark.parametrize(
    ("changes", "name", "fragment"), [c[1:] for c in RELEASE_CASES], ids=[c[0] for c in RELEASE_CASES]
)
def test_judge_release_target(changes, name, fragment):
    reason = trust.judge_release_target("/srv/gunicorn/shop/releases", name, fake_lstat(dict(GOOD_TREE, **changes)))
    assert reason is None if fragment is None else fragment in reason


LINK_CASES = [
    ("the current link", {}, "/srv/gunicorn/shop/current", None),
    ("a directory, not a link", {"/srv/gunicorn/shop/current": st()}, "/srv/gunicorn/shop/current", "not a symlink"),
    ("a link in a user-owned directory", {"/srv/gunicorn/shop": st(uid=998)}, "/srv/gunicorn/shop/current", "uid 998"),
    ("a link under a sticky /tmp parent", {"/tmp/current": st("link")}, "/tmp/current", "writable"),
    ("a relative path", {}, "current", "not an absolute path"),
    ("dot-dot", {}, "/srv/gunicorn/shop/../shop/current", ". or .."),
]


@pytest.mark.parametrize(("changes", "link", "fragment"), [c[1:] for c in LINK_CASES], ids=[c[0] for c in LINK_CASES])
def test_judge_link(changes, link, fragment):
    reason = trust.judge_link(link, fake_lstat(dict(GOOD_TREE, **changes)))
    assert reason is None if fragment is None else fragment in reason


def test_judge_path_accepts_a_root_owned_sticky_ancestor():
    tree = dict(GOOD_TREE, **{"/tmp/a": st(mode=0o700), "/tmp/a/b": st(mode=0o700)})
    assert trust.judge_path("/tmp/a/b/current", fake_lstat(tree)) is None
    tree["/tmp"] = st(mode=0o1777, uid=998)
    assert "uid 998" in trust.judge_path("/tmp/a/b/current", fake_lstat(tree))


@pytest.mark.parametrize(
    ("cwd", "name"),
    [
        ("/srv/gunicorn/shop/releases/1", "1"),
        ("/srv/gunicorn/shop/releases/1/app", "1"),
        ("/srv/gunicorn/shop/releases", None),
        ("/tmp/evil/releases/1", None),
        ("/srv/gunicorn/shop/releases-evil/1", None),
        ("/srv/gunicorn/shop/releases/..", None),
        (None, None),
    ],
)
def test_release_name_of_takes_only_a_name_under_the_releases_tree(cwd, name):
    assert trust.release_name_of(cwd, "/srv/gunicorn/shop/releases") == name


# -- the manifest -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "uid", "fragment"),
    [
        (0o640, 0, None),
        (0o660, 0, "group- or world-writable"),
        (0o646, 0, "group- or world-writable"),
        (0o600, 998, "uid 998"),
    ],
)
def test_manifest_must_be_roots_and_not_writable_by_others(tmp_path, mode, uid, fragment):
    path = tmp_path / "instance.json"
    path.write_text('{"current": "/srv/gunicorn/shop/current", "root": "/srv/gunicorn/shop"}')
    os.chmod(path, mode)
    os.chown(path, uid, 0)
    manifest, problem = trust.read_manifest(str(path))
    if fragment is None:
        assert problem is None and manifest["current"] == "/srv/gunicorn/shop/current"
    else:
        assert manifest is None and fragment in problem and "instance manifest not trusted" in problem


def test_a_symlinked_manifest_is_not_trusted(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    (tmp_path / "instance.json").symlink_to(real)
    manifest, problem = trust.read_manifest(str(tmp_path / "instance.json"))
    assert manifest is None and "not a regular file" in problem


def test_a_missing_manifest_is_no_problem(tmp_path):
    assert trust.read_manifest(str(tmp_path / "instance.json")) == (None, None)


# -- pidfiles ------------------------------------------------------------------------------------------------------


def test_a_symlinked_pidfile_is_refused(tmp_path):
    (tmp_path / "real.pid").write_text("1\n")
    (tmp_path / "master.pid").symlink_to(tmp_path / "real.pid")
    with pytest.raises(proc.DiscoveryError, match="is a symlink"):
        proc.read_pidfile(str(tmp_path / "master.pid"))


def test_stale_second_pidfile_is_removed_only_when_a_regular_file_naming_a_dead_pid(tmp_path):
    pidfile = str(tmp_path / "master.pid")
    second = tmp_path / "master.pid.2"
    target = tmp_path / "precious"
    target.write_text("999999\n")
    second.symlink_to(target)
    assert "not a regular file" in trust.remove_second_pidfile(pidfile, lambda pid: False)
    assert second.is_symlink() and target.exists()
    second.unlink()
    second.write_text("4242\n")
    assert trust.remove_second_pidfile(pidfile, lambda pid: True) is None
    assert second.exists()
    assert "removed stale" in trust.remove_second_pidfile(pidfile, lambda pid: False)
    assert not second.exists()


def test_locate_refuses_a_pidfile_that_disagrees_with_the_units_main_pid(tmp_path):
    pidfile = tmp_path / "master.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    unit = dict(UNIT, main_pid=1)
    with pytest.raises(trust.Refused, match=r"but unit gunicorn-shop\.service's MainPID is 1: refusing"):
        trust.locate_master(str(pidfile), CONFIG, unit)


def test_locate_refuses_a_pidfile_naming_a_foreign_process(tmp_path):
    pidfile = tmp_path / "master.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    with pytest.raises(trust.Refused, match="is not the gunicorn master for this instance"):
        trust.locate_master(str(pidfile), CONFIG, NO_UNIT)


# -- signalling: real processes ------------------------------------------------------------------------------------


@pytest.fixture
def sleeper():
    started = []

    def start():
        child = subprocess.Popen(["sleep", "60"])
        started.append(child)
        return child

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_refused_process_is_never_signalled(sleeper):
    victim = sleeper()
    with pytest.raises(trust.Refused, match=f"refused to signal PID {victim.pid} as the new master: it is not a child"):
        trust.send_signal(victim.pid, "SIGTERM", lambda f: trust.judge_new_master(f, OLD, NO_UNIT, EXES), "new master")
    time.sleep(0.1)
    assert victim.poll() is None


def test_a_checked_process_is_signalled_through_its_handle(sleeper):
    child = sleeper()
    handle = trust.open_checked(child.pid, lambda f: None, "test process")
    with handle:
        assert handle.fd is not None or not hasattr(os, "pidfd_open")
        assert handle.send("SIGTERM") is True
    assert child.wait(timeout=5) == -signal.SIGTERM


def test_a_handle_never_reaches_a_later_process(sleeper, monkeypatch):
    child = sleeper()
    handle = trust.open_checked(child.pid, lambda f: None, "test process")
    child.kill()
    child.wait()
    with handle:
        assert handle.send("SIGTERM") is False
    # Without pidfds the re-check before os.kill sees the PID is not the checked process any more.
    monkeypatch.setattr(trust, "_pidfd_open", lambda pid: None)
    other = sleeper()
    handle = trust.open_checked(other.pid, lambda f: None, "test process")
    handle.fact = dict(handle.fact, starttime=handle.fact["starttime"] - 1)
    assert handle.send("SIGTERM") is False
    time.sleep(0.1)
    assert other.poll() is None


def test_swap_current_is_atomic_and_checked(tmp_path):
    root = tmp_path / "shop"
    (root / "releases" / "1").mkdir(parents=True)
    (root / "releases" / "2").mkdir()
    os.chmod(tmp_path, 0o755)
    link = root / "current"
    link.symlink_to(root / "releases" / "2")
    previous = trust.swap_current(str(link), str(root / "releases"), "1")
    assert previous == str(root / "releases" / "2")
    assert os.readlink(link) == str(root / "releases" / "1")
    (root / "releases" / "evil").symlink_to("/etc")
    with pytest.raises(trust.Refused, match="is a symlink, not a release directory"):
        trust.swap_current(str(link), str(root / "releases"), "evil")
    assert os.readlink(link) == str(root / "releases" / "1")
    assert sorted(os.listdir(root)) == ["current", "releases"]


# -- the upgrade's restore plan ------------------------------------------------------------------------------------


def test_release_plan_never_uses_the_masters_pwd_and_takes_only_a_release_name(tmp_path):
    root = tmp_path / "shop"
    (root / "releases" / "1").mkdir(parents=True)
    (root / "current").symlink_to(root / "releases" / "1")
    manifest = {"current": str(root / "current"), "root": str(root)}
    plan = upgrade.release_plan(None, manifest, str(root / "releases" / "1"))
    assert plan["problem"] is None and plan["name"] == "1" and plan["link"] == str(root / "current")
    plan = upgrade.release_plan(None, manifest, "/tmp/evil/releases/1")
    assert "is not a release under" in plan["problem"]
    plan = upgrade.release_plan(None, None, str(root / "releases" / "1"))
    assert "no release link" in plan["problem"]
    os.chmod(root / "releases", 0o777)
    plan = upgrade.release_plan(None, manifest, str(root / "releases" / "1"))
    assert "group- or world-writable" in plan["problem"]


def test_second_master_refusal_names_the_pid_and_the_file():
    snap = {"refused": [{"pid": 4242, "source": "/run/gunicorn-shop/master.pid.2", "reason": "it is not a child"}]}
    assert common.second_master_refusal(snap, 100) == (
        "refused PID 4242 named by /run/gunicorn-shop/master.pid.2 as the second master of master 100: "
        "it is not a child"
    )
    assert common.second_master_refusal({"refused": []}, 100) is None


def test_channel_refusal_names_a_running_stranger_and_ignores_the_dead(sleeper):
    child = sleeper()
    me = trust.facts(os.getpid())
    identity = SimpleNamespace(master=me, unit=NO_UNIT)
    assert common.channel_refusal({"workers": [{"pid": child.pid, "state": "ready"}]}, identity) is None
    gone = sleeper()
    gone.kill()
    gone.wait()
    assert common.channel_refusal({"workers": [{"pid": gone.pid}, {"pid": "x"}, {"pid": True}]}, identity) is None
    refusal = common.channel_refusal({"workers": [{"pid": child.pid}, {"pid": 1}]}, identity)
    assert refusal.startswith(
        f"refused the control socket's report of PID 1 as a worker of master {os.getpid()}: it is not a child"
    )


def test_a_process_that_exits_while_it_is_read_is_taken_for_gone(sleeper, monkeypatch):
    """A draining worker can exit between the reads of /proc/PID/stat and /proc/PID/cgroup: its facts are none,
    not a live process outside the unit's cgroup, which would refuse the control socket's truthful report."""
    child = sleeper()
    assert trust.facts(child.pid)["cgroup"] is not None
    real_read = trust.proc._read

    def exits_before_its_cgroup_is_read(path, mode="r"):
        if path.endswith(f"/{child.pid}/cgroup"):
            child.kill()
            child.wait()
            return None
        return real_read(path, mode)

    monkeypatch.setattr(trust.proc, "_read", exits_before_its_cgroup_is_read)
    assert trust.facts(child.pid) is None
    me = trust.facts(os.getpid())
    identity = SimpleNamespace(master=me, unit={"checked": True, "control_group": me["cgroup"], "name": "x.service"})
    assert common.channel_refusal({"workers": [{"pid": child.pid}]}, identity) is None
