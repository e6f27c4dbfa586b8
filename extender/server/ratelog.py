"""Log lines that a flood cannot multiply: at most one per reason in each interval, with a count of the rest.

Refused requests are logged so that an operator chasing kube-scheduler's "extender error" finds the reason in
the extender's log; a misconfigured client resending the same bad request many times a second must not fill
that log, so repeats are counted and reported with the next line of their reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Reason:
    logged_at: float
    suppressed: int = 0


class RateLimitedLog:
    """``note(reason, message)`` logs a warning at most once per ``reason`` every ``interval_s`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        max_reasons: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_reasons = max_reasons  # reasons are a few fixed texts; a bound all the same
        self.clock = clock
        self.reasons: dict[str, _Reason] = {}

    def note(self, reason: str, message: str) -> bool:
        """Log ``message`` unless ``reason`` was logged within the interval; True if it was logged."""
        now = self.clock()
        seen = self.reasons.get(reason)
        if seen is not None and now - seen.logged_at < self.interval_s:
            seen.suppressed += 1
            return False
        if seen is None and len(self.reasons) >= self.max_reasons:
            self.reasons.clear()
        if seen is not None and seen.suppressed:
            message += f" ({seen.suppressed} more like it in the last {now - seen.logged_at:.0f} s not logged)"
        self.reasons[reason] = _Reason(now)
        self.logger.warning("%s", message)
        return True
