"""The arbiter wheel the role ships is the one arbiter/ builds today, and it installs and runs."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import build_arbiter_wheel

SHIPPED = sorted(build_arbiter_wheel.SHIPPED_DIR.glob("graceful_gunicorn_arbiter-*.whl"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fresh_wheel(tmp_path_factory) -> Path:
    return build_arbiter_wheel.build(tmp_path_factory.mktemp("wheel"))


def test_the_role_ships_exactly_one_arbiter_wheel():
    assert len(SHIPPED) == 1, f"roles/server/files holds {[p.name for p in SHIPPED]}: run make arbiter-wheel"


def test_the_shipped_wheel_is_the_one_the_source_builds(fresh_wheel):
    shipped = SHIPPED[0]
    assert shipped.name == fresh_wheel.name, "the version changed: run make arbiter-wheel"
    if digest(shipped) != digest(fresh_wheel):
        with zipfile.ZipFile(shipped) as old, zipfile.ZipFile(fresh_wheel) as new:
            old_files = {info.filename: old.read(info) for info in old.infolist()}
            new_files = {info.filename: new.read(info) for info in new.infolist()}
        differ = sorted(
            name for name in old_files.keys() | new_files.keys() if old_files.get(name) != new_files.get(name)
        )
        pytest.fail(
            f"the shipped wheel is stale ({', '.join(differ) or 'zip metadata'} differ): run make arbiter-wheel"
        )


def test_a_second_build_is_byte_for_byte_the_same(fresh_wheel, tmp_path):
    again = build_arbiter_wheel.build(tmp_path)
    assert digest(again) == digest(fresh_wheel)


def test_the_wheel_holds_the_package_and_the_launcher_only(fresh_wheel):
    with zipfile.ZipFile(fresh_wheel) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    packages = {name.split("/")[0] for name in names}
    assert packages == {"graceful_arbiter", "graceful_gunicorn_arbiter-0.1.0.dist-info"}
    assert "graceful_arbiter/arbiter.py" in names
    assert not [name for name in names if "__pycache__" in name or "/tests/" in name]
    assert "graceful-gunicorn=graceful_arbiter.launcher:main" in entry_points.replace(" ", "")
    assert "Requires-Dist: gunicorn>=25.1,<28" in metadata
    assert "Requires-Python: >=3.10" in metadata


def test_the_shipped_wheel_installs_offline_and_its_launcher_runs(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--no-index", "--no-deps", "--disable-pip-version-check", SHIPPED[0]],
        check=True,
    )
    # The controller's gunicorn stands in for the host's: a .pth line puts its directory after the venv's own
    # site-packages, so the arbiter imported is the wheel's, not the one installed beside that gunicorn.
    import gunicorn

    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    (site_packages / "controller_gunicorn.pth").write_text(str(Path(gunicorn.__file__).parents[1]) + "\n")
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import graceful_arbiter; print(graceful_arbiter.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site_packages)), where.stdout
    result = subprocess.run(
        [venv / "bin" / "graceful-gunicorn", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "gunicorn" in (result.stdout + result.stderr).lower()


def test_the_role_default_and_its_documentation_name_the_shipped_wheel():
    role = build_arbiter_wheel.REPO / "roles" / "server"
    expected = f'"{{{{ role_path }}}}/files/{SHIPPED[0].name}"'
    for path in (role / "defaults" / "main.yml", role / "meta" / "argument_specs.yml"):
        assert expected in path.read_text(), f"{path.relative_to(build_arbiter_wheel.REPO)} must default to {expected}"
