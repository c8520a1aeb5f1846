def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (real gunicorn masters)")
    config.addinivalue_line("markers", "systemd: boots a systemd-nspawn test host")
