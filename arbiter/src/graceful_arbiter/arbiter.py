"""GracefulArbiter: gunicorn's Arbiter with recycling that never takes the server down."""

from __future__ import annotations

from gunicorn.arbiter import Arbiter


class GracefulArbiter(Arbiter):
    """The master process. Behaviour beyond stock gunicorn is added handler by handler."""
