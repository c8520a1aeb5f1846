"""gunicorn's control socket server, extended with the `graceful` commands.

Commands are gunicorn's (`show workers`, `worker add 1`, `reload`...) plus:
  graceful status    the master's state, see README.md
  graceful refresh   ask for a rolling refresh; returns {"accepted": true, "request_id": N}
  graceful help
"""

from __future__ import annotations

from gunicorn.ctl.server import ControlSocketServer


class GracefulControlServer(ControlSocketServer):
    def _execute_command(self, parts: list) -> dict:
        if parts and parts[0].lower() == "graceful":
            return self.arbiter.control_command(parts[1:])
        return super()._execute_command(parts)
