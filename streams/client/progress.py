"""Progress of a long run on stderr: a bar with rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["Progress"]



class Progress:
    """A progress bar with rate and ETA on a terminal; a plain line every few seconds otherwise.

    ``write`` gets raw text: bar redraws start with a carriage return, plain lines end with a newline.
    """

    def __init__(self, total: int, write: Callable[[str], None], *, tty: bool, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, label: str = "backfill",
                 second: str = "published") -> None:
        self.total = total
        self.write = write
        self.tty = tty
        self.every = every if not tty else 0.2
        self.clock = clock
        self.label = label
        self.second = second
        self.began = clock()
        self._last = float("-inf")
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, done: int, published: int, *, force: bool = False) -> None:
        """Report ``done`` of ``total`` (throttled unless ``force``)."""
        now = self.clock()
        if not force and now - self._last < self.every:
            return
        self._last = now
        self._samples.append((now, done))
        self.write(self.line(done, published, now))

    def rate(self, now: float) -> float:
        """Results per second over the last ten seconds (over the whole run until there is enough)."""
        while len(self._samples) > 2 and now - self._samples[0][0] > 10.0:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.5:
            t0, d0 = self.began, 0
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def line(self, done: int, published: int, now: float) -> str:
        """One progress line (with a carriage return and a bar on a terminal)."""
        rate = self.rate(now)
        left = self.total - done
        eta = _clock_text(left / rate) if rate > 0 and left > 0 else ("0:00" if left <= 0 else "?")
        share = done / self.total if self.total else 1.0
        text = (f"{self.label} {done:,}/{self.total:,} {share:4.0%}  {rate:,.0f}/s  ETA {eta}  "
                f"({self.second} {published:,})")
        if not self.tty:
            return text + "\n"
        width = 24
        filled = int(share * width)
        return f"\r[{'#' * filled}{'-' * (width - filled)}] {text}\x1b[K"

    def finish(self, done: int, published: int) -> None:
        """The final line (ends the bar's line on a terminal)."""
        self.update(done, published, force=True)
        if self.tty:
            self.write("\n")


def _clock_text(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
