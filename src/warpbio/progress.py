"""Progress lines for long steps, rate-limited so logs stay readable."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("warpbio.progress")


class Progress:
    """Log ``label: done/total (pct, rate, eta)`` at most every ``every`` seconds."""

    def __init__(self, label: str, total: int, every: float = 10.0, unit: str = "items"):
        self.label, self.total, self.every, self.unit = label, max(int(total), 1), every, unit
        self.done = 0
        self.started = self._last = time.monotonic()
        log.info("%s: starting (%d %s)", label, self.total, unit)

    def update(self, amount: int = 1) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            elapsed = max(now - self.started, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %d/%d %s (%.0f%%, %.3g %s/s, eta %.0f s)",
                self.label,
                self.done,
                self.total,
                self.unit,
                100.0 * self.done / self.total,
                rate,
                self.unit,
                eta,
            )
