"""One progress display for every stage, readable both in a terminal and in a job log.

In a terminal this is a tqdm bar. Under ``ray job submit`` or CI the output is a log, where a
carriage-return bar turns into noise, so plain lines are printed at most every few seconds
(and at the end) instead.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "catchment", quiet: bool = False
                 ) -> None:
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()
        self._bar = tqdm(total=total, desc=desc, unit=unit) \
            if sys.stderr.isatty() and not quiet else None
        self.extra = ""

    def update(self, n: int = 1, failed: int = 0, extra: str = "") -> None:
        self.done += n
        self.failed += failed
        self.extra = extra or self.extra
        if self._bar is not None:
            self._bar.update(n)
            postfix = f"failed={self.failed}" + (f" {self.extra}" if self.extra else "")
            self._bar.set_postfix_str(postfix, refresh=False)
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last >= 5.0 or self.done >= self.total:
            self._last = now
            self._print_line()

    def _print_line(self) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        extra = f" {self.extra}" if self.extra else ""
        print(
            f"[{self.desc}] {self.done}/{self.total} done, {self.failed} failed, "
            f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s{extra}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done < self.total and not self.quiet:
            self._print_line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def log(message: str) -> None:
    """A stage-level message: to stderr so it shows in terminals and job logs alike."""
    print(message, file=sys.stderr, flush=True)
