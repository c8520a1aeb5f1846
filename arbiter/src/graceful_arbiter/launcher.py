"""The `graceful-gunicorn` command: gunicorn's own command line, run by the graceful arbiter."""

from __future__ import annotations

import os
import sys

from gunicorn import util
from gunicorn.app.wsgiapp import WSGIApplication

from graceful_arbiter import envfile

# Importing the arbiter registers the graceful settings (graceful_arbiter.settings) before gunicorn
# builds its Config and argument parser.
from graceful_arbiter.arbiter import GracefulArbiter


class GracefulApplication(WSGIApplication):
    """gunicorn's WSGI/ASGI application loader, with the master replaced by GracefulArbiter."""

    def run(self):
        if self.cfg.check_config or self.cfg.print_config:
            # gunicorn loads the app, reports, and exits here: no master starts.
            super().run()
            return
        if self.cfg.daemon:
            util.daemonize(self.cfg.enable_stdio_inheritance)
        for path in filter(None, (self.cfg.pythonpath or "").split(",")):
            path = os.path.abspath(path)
            if path not in sys.path:
                sys.path.insert(0, path)
        try:
            GracefulArbiter(self).run()
        except RuntimeError as exc:
            print(f"\nError: {exc}\n", file=sys.stderr, flush=True)
            sys.exit(1)


def apply_environment_file() -> None:
    """Apply GRACEFUL_GUNICORN_ENV_FILE before gunicorn's Config copies the environment.

    A master re-executed by USR2 runs this too, so it reads the file as it is now. A file that
    cannot be parsed stops this master before it binds or forks anything: at a USR2 the old
    master keeps serving.
    """
    try:
        envfile.STARTUP = envfile.reload_from_environment()
    except envfile.EnvFileError as exc:
        print(f"\nError: environment file ({envfile.FILE_ENV}): {exc}\n", file=sys.stderr, flush=True)
        sys.exit(1)


def main() -> None:
    apply_environment_file()
    GracefulApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()


if __name__ == "__main__":
    main()
