"""The wheelhouse artifact: reproducible packing, verification on unpack, and which wheels fit a host."""

import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_artifact as artifact

HOST = {"implementation": "cpython", "major": 3, "minor": 11, "machine": "x86_64", "glibc": (2, 36)}


@pytest.fixture
def wheelhouse(tmp_path):
    src = tmp_path / "wheels"
    src.mkdir()
    (src / "gunicorn-27.0.1-py3-none-any.whl").write_bytes(b"gunicorn wheel")
    (src / "shop-1.0.0-py3-none-any.whl").write_bytes(b"shop wheel")
    (src / "README.txt").write_text("not a distribution")
    (src / "nested").mkdir()
    return src


def test_build_packs_the_top_level_distributions_with_a_manifest(wheelhouse, tmp_path):
    built = artifact.build(str(wheelhouse), str(tmp_path / "cache"))
    assert built["changed"]
    assert built["distributions"] == ["gunicorn-27.0.1-py3-none-any.whl", "shop-1.0.0-py3-none-any.whl"]
    assert built["skipped"] == ["README.txt", "nested"]
    assert artifact.ARTIFACT_RE.match(built["name"])
    with open(built["path"], "rb") as handle:
        assert built["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    with tarfile.open(built["path"]) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["SHA256SUMS"] + built["distributions"]
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
        manifest = tar.extractfile("SHA256SUMS").read().decode()
    assert manifest == good_manifest(**{"gunicorn-27.0.1-py3-none-any.whl": b"gunicorn wheel"}) + good_manifest(
        **{"shop-1.0.0-py3-none-any.whl": b"shop wheel"}
    )
    assert oct(os.stat(tmp_path / "cache").st_mode & 0o777) == "0o700"


def test_build_is_reproducible_and_named_by_content(wheelhouse, tmp_path):
    first = artifact.build(str(wheelhouse), str(tmp_path / "a"))
    again = artifact.build(str(wheelhouse), str(tmp_path / "a"))
    elsewhere = artifact.build(str(wheelhouse), str(tmp_path / "b"))
    assert not again["changed"]
    assert first["sha256"] == again["sha256"] == elsewhere["sha256"]
    assert first["name"] == elsewhere["name"]
    (wheelhouse / "shop-1.0.0-py3-none-any.whl").write_bytes(b"shop wheel, rebuilt")
    rebuilt = artifact.build(str(wheelhouse), str(tmp_path / "a"))
    assert rebuilt["changed"] and rebuilt["name"] != first["name"]


def test_a_wheel_name_longer_than_ustar_allows_is_packed_and_unpacked(wheelhouse, tmp_path):
    # A real name from Airflow's dependencies: 101 characters, more than a ustar header holds.
    long_name = "charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl"
    assert len(long_name) > 100
    (wheelhouse / long_name).write_bytes(b"charset wheel")
    built = artifact.build(str(wheelhouse), str(tmp_path / "cache"))
    assert long_name in built["distributions"]
    assert artifact.build(str(wheelhouse), str(tmp_path / "again"))["sha256"] == built["sha256"]
    dest = tmp_path / "host-wheelhouse"
    unpack(built["path"], built["sha256"], dest)
    assert (dest / long_name).read_bytes() == b"charset wheel"


def test_build_refuses_a_wheelhouse_without_distributions(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(artifact.ArtifactError, match="holds no wheel"):
        artifact.build(str(tmp_path / "empty"), str(tmp_path / "cache"))
    with pytest.raises(artifact.ArtifactError, match="not a directory"):
        artifact.build(str(tmp_path / "missing"), str(tmp_path / "cache"))


def write_tar(path, members):
    """A tar of (TarInfo fields, data) pairs, for artifacts the builder would never make."""
    with tarfile.open(path, "w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/shadow"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def unpack(path, digest, dest):
    """What the module does on a host: inspect, then unpack into dest."""
    manifest, digests = artifact.inspect_artifact(path, digest)
    artifact.replace_directory(str(dest), path, digests)
    return manifest


def test_inspect_checks_the_copy_against_the_controller_digest(wheelhouse, tmp_path):
    built = artifact.build(str(wheelhouse), str(tmp_path / "cache"))
    manifest, digests = artifact.inspect_artifact(built["path"], built["sha256"])
    assert sorted(digests) == built["distributions"]
    assert manifest == built["manifest"]
    with pytest.raises(artifact.ArtifactError, match=r"not the .* the controller packed"):
        artifact.inspect_artifact(built["path"], "0" * 64)


def good_manifest(**files):
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))


@pytest.mark.parametrize(
    "members, message",
    [
        (
            [
                ("SHA256SUMS", good_manifest(**{"a-1-py3-none-any.whl": b"a"}).encode(), tarfile.REGTYPE),
                ("a-1-py3-none-any.whl", b"a", tarfile.REGTYPE),
                ("b-1-py3-none-any.whl", b"b", tarfile.REGTYPE),
            ],
            "b-1-py3-none-any.whl is not in the manifest",
        ),
        (
            [("SHA256SUMS", good_manifest(**{"a-1-py3-none-any.whl": b"a"}).encode(), tarfile.REGTYPE)],
            "a-1-py3-none-any.whl is missing",
        ),
        ([("a-1-py3-none-any.whl", b"", tarfile.SYMTYPE)], "not a regular file"),
        ([("../../etc/cron.d/x.whl", b"x", tarfile.REGTYPE)], "not a distribution file"),
        ([("sub/a-1-py3-none-any.whl", b"x", tarfile.REGTYPE)], "not a distribution file"),
        ([("a-1-py3-none-any.whl", b"a", tarfile.REGTYPE)], "has no SHA256SUMS"),
        ([("SHA256SUMS", b"nonsense\n", tarfile.REGTYPE)], "line 1 is not"),
    ],
)
def test_inspect_refuses_what_the_builder_never_makes(tmp_path, members, message):
    path = str(tmp_path / "wheelhouse-0000000000000000.tar")
    digest = write_tar(path, members)
    with pytest.raises(artifact.ArtifactError, match=message):
        artifact.inspect_artifact(path, digest)


def test_a_member_whose_content_differs_from_the_manifest_leaves_the_wheelhouse_as_it_was(tmp_path):
    path = str(tmp_path / "wheelhouse-0000000000000000.tar")
    digest = write_tar(
        path,
        [
            ("SHA256SUMS", good_manifest(**{"a-1-py3-none-any.whl": b"a"}).encode(), tarfile.REGTYPE),
            ("a-1-py3-none-any.whl", b"tampered", tarfile.REGTYPE),
        ],
    )
    dest = tmp_path / "wheelhouse"
    dest.mkdir()
    (dest / "old-0.1-py3-none-any.whl").write_bytes(b"old")
    with pytest.raises(artifact.ArtifactError, match="another sha256"):
        unpack(path, digest, dest)
    assert os.listdir(dest) == ["old-0.1-py3-none-any.whl"]
    assert sorted(os.listdir(tmp_path)) == ["wheelhouse", "wheelhouse-0000000000000000.tar"]


def test_replace_directory_swaps_in_the_verified_files(wheelhouse, tmp_path):
    built = artifact.build(str(wheelhouse), str(tmp_path / "cache"))
    dest = tmp_path / "root" / "wheelhouse"
    dest.parent.mkdir()
    assert not artifact.unpacked_matches(str(dest), built["manifest"])
    dest.mkdir()
    (dest / "old-0.1-py3-none-any.whl").write_bytes(b"old")
    manifest = unpack(built["path"], built["sha256"], dest)
    assert sorted(os.listdir(dest)) == ["SHA256SUMS", *built["distributions"]]
    assert (dest / "shop-1.0.0-py3-none-any.whl").read_bytes() == b"shop wheel"
    assert artifact.unpacked_matches(str(dest), manifest)
    assert os.listdir(dest.parent) == ["wheelhouse"]
    (dest / "shop-1.0.0-py3-none-any.whl").write_bytes(b"changed on the host")
    assert not artifact.unpacked_matches(str(dest), manifest)


def test_replace_directory_refuses_a_link(wheelhouse, tmp_path):
    built = artifact.build(str(wheelhouse), str(tmp_path / "cache"))
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "wheelhouse")
    with pytest.raises(artifact.ArtifactError, match="symbolic link"):
        unpack(built["path"], built["sha256"], tmp_path / "wheelhouse")
    assert os.listdir(tmp_path / "elsewhere") == []
    assert not artifact.unpacked_matches(str(tmp_path / "wheelhouse"), built["manifest"])


@pytest.mark.parametrize(
    "filename, fits",
    [
        ("gunicorn-27.0.1-py3-none-any.whl", True),
        ("six-1.16.0-py2.py3-none-any.whl", True),
        ("legacy-1.0-py2-none-any.whl", False),
        ("modern-1.0-py312-none-any.whl", False),
        ("older-1.0-py39-none-any.whl", True),
        ("ext-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("ext-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", False),
        ("ext-1.0-cp39-cp39-manylinux_2_17_x86_64.whl", False),
        ("ext-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", False),
        ("ext-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", False),
        ("ext-1.0-cp311-cp311-musllinux_1_2_x86_64.whl", False),
        ("ext-1.0-cp311-cp311-linux_x86_64.whl", True),
        ("ext-1.0-cp311-cp311-manylinux1_x86_64.whl", True),
        ("stable-1.0-cp38-abi3-manylinux2014_x86_64.whl", True),
        ("stable-1.0-cp312-abi3-manylinux2014_x86_64.whl", False),
        ("ext-1.0-cp311-cp311-win_amd64.whl", False),
        ("ext-1.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl", False),
        ("sdist-1.0.tar.gz", True),
    ],
)
def test_wheel_fits_cpython_311_on_glibc_x86_64(filename, fits):
    assert artifact.wheel_fits(filename, HOST) is fits


def test_a_glibc_wheel_does_not_fit_a_host_without_glibc():
    assert not artifact.wheel_fits("ext-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", dict(HOST, glibc=None))
    assert artifact.wheel_fits("pure-1.0-py3-none-any.whl", dict(HOST, glibc=None))


def test_unfit_projects_needs_one_fitting_file_per_project():
    names = [
        "ext-1.0-cp39-cp39-manylinux_2_17_x86_64.whl",
        "ext-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "Other_Ext-2.0-cp313-cp313-manylinux_2_17_x86_64.whl",
        "other.ext-2.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "pure-1.0-py3-none-any.whl",
    ]
    assert artifact.unfit_projects(names, HOST) == ["other-ext"]
    assert artifact.unfit_projects(names, dict(HOST, minor=13)) == ["ext"]


def test_describe_host_names_what_the_wheels_were_matched_against():
    assert artifact.describe_host(HOST) == "cpython 3.11 on x86_64, glibc 2.36"
    assert artifact.describe_host(dict(HOST, glibc=None)) == "cpython 3.11 on x86_64, no glibc"


@pytest.mark.parametrize("line", ["%s  a.whl" % ("0" * 63), "%s  ../a.whl" % ("0" * 64), "%s  .a.whl" % ("0" * 64)])
def test_parse_manifest_refuses_lines_it_does_not_accept(line):
    with pytest.raises(artifact.ArtifactError, match="line 1"):
        artifact.parse_manifest(line + "\n")
