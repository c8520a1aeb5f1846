"""graceful.gunicorn's example ASGI app: /health, /version, / and /slow, with failure drills.

/ also shows DEMO_GREETING and a short digest of DEMO_SECRET, both read at each request: a changed
environment or a rotated secret can be seen from outside without the secret itself.
"""

import asyncio
import hashlib
import json
import os
import time

# Rewritten when a release is built (tests/lab/build_wheelhouse.py), so that releases differ.
__version__ = "1.0.0"
# What this release does wrong, for drills: ok, import-error, slow-import, health-error, hang-startup.
BEHAVIOUR = os.environ.get("DEMO_BEHAVIOUR", "ok")

URL_PREFIX = os.environ.get("DEMO_URL_PREFIX", "").rstrip("/")
# Releases that import but answer /health with 500 on this host only: a release only its health gate can catch.
UNHEALTHY_HERE = __version__ in os.environ.get("DEMO_UNHEALTHY_VERSIONS", "").split(",")
# Releases that fail to import on this host only (a comma-separated list), for drills on one host of a fleet.
if __version__ in os.environ.get("DEMO_BROKEN_VERSIONS", "").split(","):
    raise RuntimeError(f"graceful-demo-asgi {__version__}: import fails on this host (DEMO_BROKEN_VERSIONS)")

if BEHAVIOUR == "import-error":
    raise RuntimeError(f"graceful-demo-asgi {__version__}: import fails on purpose (BEHAVIOUR=import-error)")
if BEHAVIOUR == "slow-import":
    time.sleep(float(os.environ.get("DEMO_IMPORT_SECONDS", "5")))


def secret_digest():
    """The first 12 hex digits of DEMO_SECRET's SHA-256, or None when it is unset."""
    secret = os.environ.get("DEMO_SECRET")
    return None if secret is None else hashlib.sha256(secret.encode()).hexdigest()[:12]


async def _send_json(send, status, body):
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if BEHAVIOUR == "hang-startup":
                await asyncio.sleep(3600)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if URL_PREFIX:
        if not path.startswith(URL_PREFIX + "/"):
            await _send_json(send, 404, {"error": "outside the URL prefix", "prefix": URL_PREFIX})
            return
        path = path[len(URL_PREFIX) :]
    if path == "/health":
        if BEHAVIOUR == "health-error" or UNHEALTHY_HERE:
            await _send_json(send, 500, {"status": "unhealthy", "version": __version__})
        else:
            await _send_json(send, 200, {"status": "ok", "version": __version__})
    elif path == "/version":
        await _send_json(send, 200, {"version": __version__, "pid": os.getpid()})
    elif path == "/slow":
        query = dict(p.split("=", 1) for p in scope.get("query_string", b"").decode().split("&") if "=" in p)
        await asyncio.sleep(min(float(query.get("seconds", "1")), 120))
        await _send_json(send, 200, {"slept": query.get("seconds", "1"), "version": __version__})
    elif path == "/":
        body = {
            "app": "graceful-demo-asgi",
            "version": __version__,
            "pid": os.getpid(),
            "greeting": os.environ.get("DEMO_GREETING"),
            "secret_sha256": secret_digest(),
        }
        await _send_json(send, 200, body)
    else:
        await _send_json(send, 404, {"error": "not found", "path": path})
