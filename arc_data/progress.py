"""Progress bars that suit where the output goes.

``progress(...)`` takes the tqdm arguments this project uses and returns a tqdm bar when the stream
(stderr unless ``file`` says otherwise) is a terminal. Anywhere else (a CI log, a Kaggle log,
``> file``) a bar's ``\\r`` redraws would pile up in the file, so it returns a ``PlainProgress``: the
same small interface (iteration, ``update``, ``set_postfix``, ``close``, ``write``, ``with``) that
prints one plain line at most every ``every`` seconds, and a last one when it closes::

    train: 1200/5000 (24%), 3.41/s, 05:52 elapsed, 18:34 left, loss=0.412, exact=0.031

``write_line(line)`` prints a line above any bar on stderr, in both modes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

# Seconds between two plain progress lines when the output is not a terminal.
PLAIN_EVERY = 30.0


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
             initial: int = 0, leave: bool = True, disable: bool = False, mininterval: float = 0.1,
             file: IO[str] | None = None, every: float = PLAIN_EVERY) -> tqdm | PlainProgress:
    """A tqdm bar on a terminal; plain lines every ``every`` seconds elsewhere. ``mininterval`` is
    the bar's redraw interval (tqdm's), ``every`` the interval between plain lines."""
    stream = sys.stderr if file is None else file
    if disable or is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, initial=initial, leave=leave, disable=disable,
                    mininterval=mininterval, file=stream)
    return PlainProgress(iterable, total=total, desc=desc, initial=initial, leave=leave, file=stream, every=every)


def is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def write_line(line: str, file: IO[str] | None = None) -> None:
    """``line`` on ``file`` (stderr by default), above any tqdm bar rather than through it."""
    tqdm.write(line, file=sys.stderr if file is None else file)


class PlainProgress:
    """tqdm's small interface, as plain lines: one when ``update`` finds ``every`` seconds have passed
    since the last, and one at ``close`` (with ``leave``) if the count moved since."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
                 initial: int = 0, leave: bool = True, file: IO[str] | None = None, every: float = PLAIN_EVERY,
                 clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.leave = iterable, total, desc, leave
        self.n = initial
        self.postfix = ""
        self.file, self.every, self._clock = file, every, clock
        self._start, self._start_n = clock(), initial
        self._printed_at, self._printed_n = self._start, initial
        self._closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._clock() - self._printed_at >= self.every:
            self._print()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Shown at the end of the next line (``refresh`` is accepted for tqdm's sake; nothing is printed now)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave and self.n != self._printed_n:
            self._print()

    @staticmethod
    def write(line: str, file: IO[str] | None = None) -> None:
        write_line(line, file)

    def line(self) -> str:
        """``desc: n/total (p%), rate/s, elapsed, left, postfix`` (the parts that are known)."""
        elapsed = self._clock() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n:g}/{self.total:g} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n:g}",
                 f"{rate:.3g}/s", f"{tqdm.format_interval(elapsed)} elapsed"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{tqdm.format_interval((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return (f"{self.desc}: " if self.desc else "") + ", ".join(parts)

    def _print(self) -> None:
        file = sys.stderr if self.file is None else self.file
        print(self.line(), file=file, flush=True)
        self._printed_at, self._printed_n = self._clock(), self.n
