"""One progress line on stderr, rewritten in place at most every 0.1 s (`nircomp run`, `nircomp.train`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class ProgressLine:
    """`show(text)` rewrites the line when `every` seconds have passed since it last did (or with
    `force=True`); `text` may be a function, called only then (a loss read from the device syncs it).
    `close()` ends the line. With `on=False` nothing is written."""

    def __init__(self, on: bool = True, every: float = 0.1):
        self.on, self.every = on, every
        self.start = time.perf_counter()
        self.shown = -float("inf")  # the first update shows at once

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def show(self, text: str | Callable[[], str], force: bool = False) -> None:
        now = time.perf_counter()
        if self.on and (force or now - self.shown > self.every):
            self.shown = now
            sys.stderr.write("\r" + (text() if callable(text) else text))
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")
            sys.stderr.flush()
