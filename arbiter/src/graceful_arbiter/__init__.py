"""graceful.gunicorn's arbiter: a gunicorn Arbiter that recycles workers without failing requests."""

__version__ = "0.1.0"
