"""Progress bars for the command-line faces (the library reports progress by callbacks)."""

from __future__ import annotations

import sys
import time


class LazyBar:
    """A tqdm bar created on the first progress report, so that a command failing on its
    arguments prints only its error line, not an empty bar."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self.bar = desc, unit, None
        self.started = time.time()  # the work starts now, not at the first report

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.desc, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
            self.bar.start_t = self.started  # elapsed time and rate count the first item too
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(desc: str, unit: str = "img"):
    """A bar driven by ``progress(done, total)`` callbacks; returns (callback, context)."""
    bar = LazyBar(desc, unit)
    return bar.update, bar
