"""bench/fleet.py's reading of a rollout's timeline: the stage play and each host's turn."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fleet import STAGE_PLAY, phases


def test_phases_reads_the_stage_play_and_every_turn():
    timeline = [
        (1.0, "PLAY [Check that the target matches hosts]"),
        (4.0, STAGE_PLAY),
        (30.0, "upgrade 3.0.0: staged on 3 of 3 hosts"),
        (30.5, "PLAY [Upgrade gunicorn hosts to a new release]"),
        (31.0, "upgrade: host 1 of 3 (a)"),
        (40.0, "upgrade: host 2 of 3 (b)"),
        (48.0, "upgrade: host 3 of 3 (c)"),
        (58.0, "PLAY [Look at the hosts the rollout did not reach]"),
        (62.0, "END"),
    ]
    result = phases(timeline)
    assert result["stage_s"] == pytest.approx(26.0)
    assert result["switch_s"] == pytest.approx([9.0, 8.0, 10.0])
    assert result["total_s"] == 62.0


def test_phases_without_a_stage_play():
    timeline = [(2.0, "upgrade: host 1 of 1 (a)"), (20.0, "END")]
    assert phases(timeline) == {"stage_s": None, "switch_s": [18.0], "total_s": 20.0}
