"""graceful.gunicorn.gunicorn_artifact run as Ansible runs it: packed, then unpacked for this machine's Python."""

import shutil
import sys

WHEELS = {
    "gunicorn-27.0.1-py3-none-any.whl": b"gunicorn wheel",
    "shop-1.0.0-py3-none-any.whl": b"shop wheel",
}


def make_wheelhouse(path, extra=()):
    path.mkdir()
    for name, data in WHEELS.items():
        (path / name).write_bytes(data)
    for name in extra:
        (path / name).write_bytes(b"x")
    return path


def test_pack_copy_unpack_then_nothing_changes(module, tmp_path):
    src = make_wheelhouse(tmp_path / "wheels")
    built = module("gunicorn_artifact", dict(state="built", src=str(src), cache_dir=str(tmp_path / "cache")))
    assert built["changed"] and not built.get("failed"), built
    host_copy = tmp_path / "host" / "artifacts" / built["name"]
    host_copy.parent.mkdir(parents=True)
    shutil.copyfile(built["path"], host_copy)
    dest = tmp_path / "host" / "wheelhouse"
    args = dict(state="unpacked", path=str(host_copy), sha256=built["sha256"], dest=str(dest), python=sys.executable)

    planned = module("gunicorn_artifact", args, check_mode=True)
    assert planned["changed"] and not dest.exists(), planned
    unpacked = module("gunicorn_artifact", args)
    assert unpacked["changed"], unpacked
    assert unpacked["host_python"].startswith("cpython 3.")
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", *sorted(WHEELS)]
    assert (dest / "shop-1.0.0-py3-none-any.whl").read_bytes() == b"shop wheel"
    again = module("gunicorn_artifact", args)
    assert not again["changed"], again

    # A wheel changed on the host is put back from the artifact.
    (dest / "shop-1.0.0-py3-none-any.whl").write_bytes(b"edited")
    assert module("gunicorn_artifact", args)["changed"]
    assert (dest / "shop-1.0.0-py3-none-any.whl").read_bytes() == b"shop wheel"


def test_unpack_refuses_a_damaged_copy_and_keeps_the_wheelhouse(module, tmp_path):
    src = make_wheelhouse(tmp_path / "wheels")
    built = module("gunicorn_artifact", dict(state="built", src=str(src), cache_dir=str(tmp_path / "cache")))
    host_copy = tmp_path / built["name"]
    with open(built["path"], "rb") as handle:
        data = bytearray(handle.read())
    data[-2000] ^= 0xFF
    host_copy.write_bytes(bytes(data))
    dest = make_wheelhouse(tmp_path / "wheelhouse")
    result = module(
        "gunicorn_artifact", dict(state="unpacked", path=str(host_copy), sha256=built["sha256"], dest=str(dest))
    )
    assert result["failed"] and "the controller packed" in result["msg"], result
    assert sorted(p.name for p in dest.iterdir()) == sorted(WHEELS)


def test_unpack_lists_the_projects_no_file_of_which_fits_the_interpreter(module, tmp_path):
    # pip may not need them on this host (a backport for older Pythons): listed for the role's message, no error.
    src = make_wheelhouse(tmp_path / "wheels", extra=["native-1.0-cp27-cp27mu-manylinux1_x86_64.whl"])
    built = module("gunicorn_artifact", dict(state="built", src=str(src), cache_dir=str(tmp_path / "cache")))
    dest = tmp_path / "wheelhouse"
    result = module(
        "gunicorn_artifact",
        dict(state="unpacked", path=built["path"], sha256=built["sha256"], dest=str(dest), python=sys.executable),
    )
    assert result["changed"] and not result.get("failed") and result["unfit"] == ["native"], result
    assert (dest / "native-1.0-cp27-cp27mu-manylinux1_x86_64.whl").exists()


def test_bad_options_are_named(module, tmp_path):
    missing = module("gunicorn_artifact", dict(state="unpacked", path=str(tmp_path / "x.tar")))
    assert missing["failed"] and "sha256" in missing["msg"] and "dest" in missing["msg"], missing
    bad_digest = module(
        "gunicorn_artifact",
        dict(state="unpacked", path=str(tmp_path / "x.tar"), sha256="abc\n", dest=str(tmp_path / "w")),
    )
    assert bad_digest["failed"] and bad_digest["msg"].startswith("sha256"), bad_digest
    bad_name = module(
        "gunicorn_artifact",
        dict(state="unpacked", path=str(tmp_path / "x.tar"), sha256="0" * 64, dest=str(tmp_path / "w")),
    )
    assert bad_name["failed"] and bad_name["msg"].startswith("path"), bad_name
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = module("gunicorn_artifact", dict(state="built", src=str(empty), cache_dir=str(tmp_path / "c")))
    assert nothing["failed"] and "holds no wheel" in nothing["msg"], nothing
