"""Progress on the terminal (stderr, so that --json output stays clean)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class TerminalProgress:
    """A progress(stage, done, total) callback drawing one bar per stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, unit="", leave=False, dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            del self._bars[stage]
