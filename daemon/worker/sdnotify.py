"""systemd's notification protocol (READY=1, WATCHDOG=1, STOPPING=1), no dependency.

It is one datagram to the socket named by $NOTIFY_SOCKET (a path, or an
abstract socket when it starts with '@'). Without that variable every call
is a no-op, so the worker behaves the same under a terminal.
"""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(usec) / 1_000_000 / 2 if usec.isdigit() and int(usec) > 0 and mine else None
        )

    def notify(self, state: str) -> bool:
        """Send `state` (e.g. "READY=1"); False when not under systemd or on error."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(state.encode())
        except OSError:
            return False
        return True
