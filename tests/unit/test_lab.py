"""The lab's choice of Debian releases and the inventory it writes for them (tests/lab/lab.py), without booting."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
import lab


def test_a_list_of_releases_is_kept_in_order_without_the_whitespace_around_names():
    assert lab.parse_releases("bullseye, trixie") == ["bullseye", "trixie"]
    assert lab.parse_releases("bookworm\n") == ["bookworm"]


@pytest.mark.parametrize("value", ["", ",", "buster", "bookworm,sid", "book worm"])
def test_an_unknown_or_empty_release_is_refused_with_the_known_ones(value):
    with pytest.raises(SystemExit, match="bullseye, bookworm, trixie"):
        lab.parse_releases(value)


def test_each_release_has_its_own_root_filesystem():
    paths = {lab.rootfs_path(release) for release in lab.RELEASES}
    assert len(paths) == len(lab.RELEASES)


def test_the_inventory_groups_hosts_by_release_and_names_the_python_where_the_release_needs_another(tmp_path):
    fake = lab.Lab.__new__(lab.Lab)
    fake.state, fake.bridge = tmp_path, "ggtest"
    hosts = [
        {"name": f"t-h{i}", "address": f"10.213.201.{10 + i}", "release": release}
        for i, release in enumerate(["bullseye", "bookworm", "trixie"], start=1)
    ]
    fake._write_inventory({"hosts": hosts}, tmp_path / "id_ed25519")
    inventory = yaml.safe_load((tmp_path / "inventory.yml").read_text())["all"]
    members = inventory["children"]["gunicorn_hosts"]["hosts"]
    assert list(members) == ["t-h1", "t-h2", "t-h3"]
    assert members["t-h1"]["gunicorn_python"] == lab.RELEASES["bullseye"]["app_python"]
    assert "gunicorn_python" not in members["t-h2"] and "gunicorn_python" not in members["t-h3"]
    assert [members[h]["lab_release"] for h in members] == ["bullseye", "bookworm", "trixie"]
    for host in hosts:
        assert list(inventory["children"][f"debian_{host['release']}"]["hosts"]) == [host["name"]]
