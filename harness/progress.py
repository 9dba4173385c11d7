"""Progress of a run: a rich progress bar on a terminal, one plain line per finished history otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    def __init__(self, total: int, skipped: int = 0, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self.total = total
        self.skipped = skipped
        self.done = 0
        self.failed = 0
        self._sample_started: dict[str, float] = {}
        self._sample_failed: dict[str, int] = {}
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.interactive,
        )
        self._bar = self._progress.add_task("questions", total=total, failed=0)

    def __enter__(self) -> RunProgress:
        if self.skipped:
            self.console.print(f"resuming: {self.skipped} questions already done, {self.total} to go")
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start_sample(self, sample_id: str, n_questions: int) -> None:
        self._sample_started[sample_id] = time.perf_counter()
        self._progress.update(self._bar, description=f"{sample_id} ({n_questions} q)")

    def advance(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        self._progress.update(self._bar, advance=1, failed=self.failed)

    def finish_sample(self, sample_id: str) -> None:
        if not self.interactive:
            elapsed = time.perf_counter() - self._sample_started.pop(sample_id, time.perf_counter())
            print(
                f"[{self.done}/{self.total} questions] {sample_id} done in {elapsed:.1f}s; failed so far {self.failed}",
                file=sys.stderr,
                flush=True,
            )
