"""The agent of ``bench_health.py`` in Python, used only when ``gcc`` is missing.

Same command line and behaviour as ``_health_agent.c`` (see there)::

    python -S _health_agent.py STARTS_FILE INTERVAL_S PHASE_S STATS_FILE

Standard library only. It costs an interpreter per agent (about 9 MiB each), which is
why the benchmark prefers the C agent.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from types import FrameType


class Agent:
    """Heartbeats over one kept-open connection, with counters dumped on SIGUSR1."""

    def __init__(self, path: str | None, stats: str) -> None:
        self.path, self.stats = path, stats
        self.sock: socket.socket | None = None
        self.dumps = self.sent = self.failed = self.connects = 0
        self.line = f'{{"pid":{os.getpid()},"status":"ok"}}\n'.encode()

    def dump(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self.dumps += 1
        temp = self.stats + ".tmp"
        with open(temp, "w", encoding="ascii") as file:
            file.write(f"{self.dumps} {self.sent} {self.failed} {self.connects}\n")
        os.replace(temp, self.stats)

    def _closed_by_peer(self, sock: socket.socket) -> bool:
        try:
            return sock.recv(1, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def beat(self) -> None:
        assert self.path is not None
        for _attempt in range(2):
            if self.sock is not None and self._closed_by_peer(self.sock):
                self.sock.close()
                self.sock = None
            try:
                if self.sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        sock.connect(self.path)
                    except OSError:
                        sock.close()
                        raise
                    self.sock = sock
                    self.connects += 1
                self.sock.sendall(self.line)
            except OSError:
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                continue
            self.sent += 1
            return
        self.failed += 1


def main() -> None:
    starts, stats = sys.argv[1], sys.argv[4]
    interval, phase = float(sys.argv[2]), float(sys.argv[3])
    with open(starts, "a", encoding="ascii") as file:
        file.write(f"{os.getpid()} {time.time():.6f}\n")
    agent = Agent(os.environ.get("HOSTVISOR_HEARTBEAT_SOCKET") or None, stats)
    signal.signal(signal.SIGUSR1, agent.dump)
    if interval <= 0 or agent.path is None:
        while True:
            signal.pause()
    agent.beat()
    next_beat = time.monotonic() + (phase if phase > 0 else interval)
    while True:
        time.sleep(max(0.0, next_beat - time.monotonic()))
        agent.beat()
        next_beat += interval


if __name__ == "__main__":
    main()
