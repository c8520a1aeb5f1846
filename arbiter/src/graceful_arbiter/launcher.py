"""The `graceful-gunicorn` command: gunicorn's own command line, run by the graceful arbiter."""

from __future__ import annotations

from gunicorn.app.wsgiapp import WSGIApplication

# Registers the graceful settings before gunicorn builds its Config and argument parser.
import graceful_arbiter.settings  # noqa: F401
from graceful_arbiter.arbiter import GracefulArbiter


class GracefulApplication(WSGIApplication):
    """gunicorn's WSGI/ASGI application loader, with the master replaced by GracefulArbiter."""

    def run(self):
        GracefulArbiter(self).run()


def main() -> None:
    GracefulApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()


if __name__ == "__main__":
    main()
