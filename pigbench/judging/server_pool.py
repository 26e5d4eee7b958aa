"""Which of several OpenAI-compatible servers gets the next request attempt.

:class:`ServerPool` balances by least outstanding requests: each attempt goes to the server with
the fewest requests in flight among those that are up, ties broken round robin. A server whose
attempt failed in a retryable way (connection refused or reset, timeout, HTTP 408, 429 or 5xx, a 200
answer that is not JSON or has no choices) is down
for a cool-off, doubled after each further failure in a row (``cool_off_s`` up to
``max_cool_off_s``), or for as long as its ``Retry-After`` asked when that is longer (at most
``max_cool_off_s``); its requests are retried on the others. After its cool-off it gets one
attempt at a time (a probe, so a server that hangs costs one timeout, not many) until a success
restores it. When no server can take an attempt, the one whose cool-off ends first gets it (the
caller's backoff paces such attempts), so a lone server behaves as before. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence


@dataclass
class _Server:
    url: str
    in_flight: int = 0
    down_until: float = 0.0
    failures_in_a_row: int = 0
    served: int = 0  # attempts answered (any HTTP answer that is not a retryable failure)
    failed: int = 0  # retryable failures


class ServerPool:
    """Picks base URLs for request attempts (see the module docstring)."""

    def __init__(self, urls: Sequence[str], cool_off_s: float = 5.0, max_cool_off_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("a server pool needs at least one base URL")
        self._servers = [_Server(u) for u in urls]
        self.cool_off_s = cool_off_s
        self.max_cool_off_s = max_cool_off_s
        self._clock = clock
        self._next = 0  # round-robin start for ties
        self._lock = threading.Lock()

    def acquire(self) -> str:
        """The base URL for the next attempt; the caller must :meth:`release` it."""
        with self._lock:
            now = self._clock()
            n = len(self._servers)
            order = [self._servers[(self._next + i) % n] for i in range(n)]
            up = [s for s in order if s.down_until <= now and (s.failures_in_a_row == 0 or s.in_flight == 0)]
            chosen = min(up, key=lambda s: s.in_flight) if up else min(order, key=lambda s: s.down_until)
            self._next = (self._servers.index(chosen) + 1) % n
            chosen.in_flight += 1
            return chosen.url

    def release(self, url: str, ok: bool, retry_after: Optional[float] = None) -> None:
        """End an attempt on ``url``: ``ok`` unless it failed in a retryable way (then the server is down,
        for its cool-off or the ``retry_after`` seconds it asked for, whichever is longer, at most
        ``max_cool_off_s``)."""
        with self._lock:
            server = next(s for s in self._servers if s.url == url)
            server.in_flight -= 1
            if ok:
                server.served += 1
                server.failures_in_a_row = 0
                server.down_until = 0.0
                return
            server.failed += 1
            server.failures_in_a_row += 1
            cool_off = min(self.max_cool_off_s, max(self.cool_off_s * 2 ** (server.failures_in_a_row - 1),
                                                    retry_after or 0.0))
            server.down_until = self._clock() + cool_off

    def any_up(self) -> bool:
        """Whether some server is out of its cool-off now (a retry can go there without waiting)."""
        with self._lock:
            now = self._clock()
            return any(s.down_until <= now for s in self._servers)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per base URL: attempts served and failed so far."""
        with self._lock:
            return {s.url: {"served": s.served, "failed": s.failed} for s in self._servers}
