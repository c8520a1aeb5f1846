"""graceful.gunicorn.files_to_send: what a copy sends, removes and creates, from two find listings."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.gunicorn.plugins.filter.files_to_send import FilterModule, files_to_send


def listing(root, **checksums):
    return [{"path": f"{root}/{rel.replace('__', '/')}", "checksum": checksum} for rel, checksum in checksums.items()]


def test_only_missing_and_changed_files_are_sent_in_path_order():
    local = listing("/c/wheels", b_whl="2", a_whl="1", c_whl="3")
    host = listing("/srv/w", a_whl="1", c_whl="old")
    sent = files_to_send(local, host, src_root="/c/wheels", dest_root="/srv/w")
    assert sent == [
        {"src": "/c/wheels/b_whl", "dest": "/srv/w/b_whl", "rel": "b_whl"},
        {"src": "/c/wheels/c_whl", "dest": "/srv/w/c_whl", "rel": "c_whl"},
    ]


def test_an_up_to_date_host_gets_nothing():
    local = listing("/c", a="1", sub__b="2")
    host = listing("/h", a="1", sub__b="2", extra="9")
    assert files_to_send(local, host, src_root="/c", dest_root="/h") == []
    assert files_to_send(local, host, src_root="/c", dest_root="/h", mode="dirs") == []


def test_an_empty_host_gets_everything_and_its_directories_shortest_first():
    local = listing("/c", pyproject="1", src__pkg__mod="2", src__pkg__sub__x="3", build__b="4")
    sent = files_to_send(local, [], src_root="/c", dest_root="/h")
    assert [item["rel"] for item in sent] == ["build/b", "pyproject", "src/pkg/mod", "src/pkg/sub/x"]
    assert files_to_send(local, [], src_root="/c", dest_root="/h", mode="dirs") == [
        "build",
        "src",
        "src/pkg",
        "src/pkg/sub",
    ]


def test_stale_lists_the_host_files_the_tree_no_longer_has():
    local = listing("/c", keep="1")
    host = listing("/h", keep="0", gone="1", old__nested="2")
    assert files_to_send(local, host, src_root="/c", dest_root="/h", mode="stale") == ["/h/gone", "/h/old/nested"]


def test_roots_and_paths_are_compared_normalised():
    # find reports paths the way the role gave them, e.g. a wheelhouse given as "<role>/../../arbiter"
    local = [{"path": "/col/roles/server/../../arbiter/src/a.py", "checksum": "1"}]
    host = [{"path": "/h/arbiter/src/a.py", "checksum": "0"}]
    sent = files_to_send(local, host, src_root="/col/roles/server/../../arbiter/", dest_root="/h/arbiter/")
    assert sent == [
        {"src": "/col/roles/server/../../arbiter/src/a.py", "dest": "/h/arbiter/src/a.py", "rel": "src/a.py"}
    ]


@pytest.mark.parametrize(
    "local, host, message",
    [
        ([{"path": "/elsewhere/a", "checksum": "1"}], [], "controller file '/elsewhere/a' is not under '/c'"),
        ([{"path": "/c/../etc/passwd", "checksum": "1"}], [], "is not under '/c'"),
        ([{"path": "/c"}], [], "is not under '/c'"),
        ([], [{"path": "/h/../etc/shadow", "checksum": "1"}], "host file '/h/../etc/shadow' is not under '/h'"),
        ([{"path": "/c/a"}], [], "no checksum for '/c/a': list it with get_checksum"),
        ([{"checksum": "1"}], [], "a controller entry has no path"),
        ("/c/a", [], "the controller files must be a list"),
        ([], {"files": []}, "the host files must be a list"),
    ],
)
def test_bad_listings_are_refused_with_the_reason(local, host, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        files_to_send(local, host, src_root="/c", dest_root="/h")


def test_an_unknown_mode_is_refused():
    with pytest.raises(AnsibleFilterError, match="mode must be one of send, stale, dirs, got 'all'"):
        files_to_send([], [], src_root="/c", dest_root="/h", mode="all")


def test_the_filter_is_registered():
    assert FilterModule().filters()["files_to_send"] is files_to_send
