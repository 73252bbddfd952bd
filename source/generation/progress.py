"""A tqdm bar for denoising steps, shown only when stderr is a terminal (never in JSON log streams)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class StepBar:
    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: tqdm | None = None

    def update(self, step: int, total: int) -> None:
        if self._bar is None:
            # disable=None: tqdm turns itself off when the stream is not a TTY.
            self._bar = tqdm(total=total, desc=self.label, unit="step", file=sys.stderr, disable=None, leave=False)
        self._bar.total = total
        self._bar.n = step
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
