"""Progress on the terminal (stderr, so that --json output stays clean)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

LINE_PREFIX = "progress: "  # plain lines when stderr is not a terminal (a background job's log)


class TerminalProgress:
    """A progress(stage, done, total) callback: one bar per stage on a terminal; on anything else, a
    `progress: stage done/total` line at most every few seconds, which the ops console reads back."""

    def __init__(self, enabled: bool = True, every: float = 2.0):
        self.enabled = enabled
        self.lines = not sys.stderr.isatty()
        self.every = every
        self._bars: dict[str, tqdm] = {}
        self._last_line = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        if self.lines:
            if done >= total or time.monotonic() - self._last_line >= self.every:
                print(f"{LINE_PREFIX}{stage} {done}/{total}", file=sys.stderr, flush=True)
                self._last_line = time.monotonic()
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
