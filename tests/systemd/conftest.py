"""Tests that boot systemd-nspawn test hosts with tests/lab/lab.py (root, systemd-container)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (real gunicorn masters)")
    config.addinivalue_line("markers", "systemd: boots a systemd-nspawn test host")
