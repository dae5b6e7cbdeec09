"""Wall seconds per named phase of a stage (train's and export's summaries: `phases_s`), so a run's record
says where a stage's time goes, not only its total."""

from __future__ import annotations

import time


class PhaseClock:
    """Wall seconds per named phase, each from the previous mark (phases: name -> seconds, in order)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self._last, 2)
        self._last = now
