"""Log lines that cannot flood the robot PC's log: at most one per topic per period."""

from __future__ import annotations

import collections
import time


class LogLimiter:
    """At most one line per `period_s` per topic; the lines in between are counted, not lost."""

    def __init__(self, period_s: float = 1.0) -> None:
        self.period_ns = int(period_s * 1e9)
        self._next: dict[str, int] = {}
        self._suppressed: dict[str, int] = collections.Counter()

    def allow(self, topic: str) -> int | None:
        """None to stay quiet, else how many lines were suppressed since the last one."""
        now = time.monotonic_ns()
        if now < self._next.get(topic, 0):
            self._suppressed[topic] += 1
            return None
        self._next[topic] = now + self.period_ns
        return self._suppressed.pop(topic, 0)
