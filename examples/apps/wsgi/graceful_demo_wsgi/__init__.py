"""graceful.gunicorn's example WSGI app: /health, /version, / and /slow, with failure drills.

/ also shows DEMO_GREETING and a short digest of DEMO_SECRET, both read at each request: a changed
environment or a rotated secret can be seen from outside without the secret itself; and the server
software (gunicorn's version), which a change of gunicorn_version changes.
"""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

# Rewritten when a release is built (tests/lab/build_wheelhouse.py), so that releases differ.
__version__ = "1.0.0"
# What this release does wrong, for drills: ok, import-error, slow-import, health-error, hang-startup, hostile
# (attacks the operations from inside the master: see hostile.py).
BEHAVIOUR = os.environ.get("DEMO_BEHAVIOUR", "ok")

URL_PREFIX = os.environ.get("DEMO_URL_PREFIX", "").rstrip("/")
# Releases that import but answer /health with 500 on this host only: a release only its health gate can catch.
UNHEALTHY_HERE = __version__ in os.environ.get("DEMO_UNHEALTHY_VERSIONS", "").split(",")
# Releases that fail to import on this host only (a comma-separated list), for drills on one host of a fleet.
if __version__ in os.environ.get("DEMO_BROKEN_VERSIONS", "").split(","):
    raise RuntimeError(f"graceful-demo-wsgi {__version__}: import fails on this host (DEMO_BROKEN_VERSIONS)")

if BEHAVIOUR == "import-error":
    raise RuntimeError(f"graceful-demo-wsgi {__version__}: import fails on purpose (BEHAVIOUR=import-error)")
if BEHAVIOUR == "slow-import":
    time.sleep(float(os.environ.get("DEMO_IMPORT_SECONDS", "5")))
if BEHAVIOUR == "hang-startup":
    time.sleep(3600)
if BEHAVIOUR == "hostile":
    from . import hostile

    hostile.arm()


def _json(start_response, status, body):
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def secret_digest():
    """The first 12 hex digits of DEMO_SECRET's SHA-256, or None when it is unset."""
    secret = os.environ.get("DEMO_SECRET")
    return None if secret is None else hashlib.sha256(secret.encode()).hexdigest()[:12]


def app(environ, start_response):
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if URL_PREFIX:
        if not path.startswith(URL_PREFIX + "/"):
            return _json(start_response, "404 Not Found", {"error": "outside the URL prefix", "prefix": URL_PREFIX})
        path = path[len(URL_PREFIX) :]
    if path == "/health":
        if BEHAVIOUR == "health-error" or UNHEALTHY_HERE or (BEHAVIOUR == "hostile" and hostile.health_fails()):
            return _json(start_response, "500 Internal Server Error", {"status": "unhealthy", "version": __version__})
        return _json(start_response, "200 OK", {"status": "ok", "version": __version__})
    if path == "/version":
        return _json(start_response, "200 OK", {"version": __version__, "pid": os.getpid()})
    if path == "/slow":
        seconds = parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["1"])[0]
        time.sleep(min(float(seconds), 120))
        return _json(start_response, "200 OK", {"slept": seconds, "version": __version__})
    if path == "/":
        body = {
            "app": "graceful-demo-wsgi",
            "version": __version__,
            "pid": os.getpid(),
            "greeting": os.environ.get("DEMO_GREETING"),
            "secret_sha256": secret_digest(),
            "server_software": environ.get("SERVER_SOFTWARE"),
        }
        return _json(start_response, "200 OK", body)
    return _json(start_response, "404 Not Found", {"error": "not found", "path": path})


application = app
