"""One progress display for every stage, readable both in a terminal and in a job log.

In a terminal this is a tqdm bar. Under ``ray job submit`` or CI the output is a log, where a
carriage-return bar turns into noise, so plain lines are logged at most every few seconds (and
at the end) instead.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from hybrid.logs import logger


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "catchment", quiet: bool = False,
                 count_failures: bool = True) -> None:
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.count_failures = count_failures
        self.done = self.failed = 0
        self.start = self._last = time.monotonic()
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr) \
            if sys.stderr.isatty() and not quiet else None
        self.extra = ""

    def update(self, n: int = 1, failed: int = 0, extra: str = "") -> None:
        self.done += n
        self.failed += failed
        self.extra = extra or self.extra
        if self._bar is not None:
            self._bar.update(n)
            parts = ([f"failed={self.failed}"] if self.count_failures else []) \
                + ([self.extra] if self.extra else [])
            self._bar.set_postfix_str(" ".join(parts), refresh=False)
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last >= 5.0 or self.done >= self.total:
            self._last = now
            self._log_line()

    def _log_line(self) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f"ETA {(self.total - self.done) / rate:.0f}s" if rate > 0 and self.done < self.total \
            else ("done" if self.done >= self.total else "ETA ?")
        failed = f", {self.failed} failed" if self.count_failures else ""
        extra = f" {self.extra}" if self.extra else ""
        logger().info(f"[{self.desc}] {self.done}/{self.total}{failed}, {elapsed:.0f}s "
                      f"elapsed, {eta}{extra}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done < self.total and not self.quiet:
            self._log_line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
