import pytest

from .harness import Master


@pytest.fixture
def master_factory(tmp_path):
    masters = []

    def make(kind="sync", sub="m", **kwargs):
        directory = tmp_path / sub
        directory.mkdir()
        master = Master(directory, kind, **kwargs)
        masters.append(master)
        return master

    yield make
    for master in masters:
        master.stop()
