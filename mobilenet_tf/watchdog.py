"""A watchdog for training steps that stop completing.

A multi-worker run whose worker is alive but makes no progress (a read hung on a network file
system, a deadlocked input pipeline) keeps sending heartbeats: TensorFlow's coordination service
never notices, and every other worker waits in the all-reduce for ever. So each worker watches its
own count of completed steps (a variable the training loop increments after every step, read here
from another thread while the step runs): when it stops moving for longer than the budget, the
worker is stuck or waits for one that is. It is stopped then, from this thread, since its main
thread is inside TensorFlow's runtime and never returns to Python: `on_stall(message)` is called,
which must end the process (the command writes its one line and exits with the status of a lost
peer, so every worker of the group stops and a restart of the whole group resumes the run).
"""

from __future__ import annotations

import contextlib
import threading
import time

import tensorflow as tf

# The budget when none is given: ten minutes, or twenty times the slowest step so far if longer.
FLOOR_SECONDS = 600.0
SLOWEST_STEP_FACTOR = 20.0


class StepWatchdog:
    """Calls `on_stall(message)` when `progress` (an int64 variable counting completed steps) has not
    moved for `timeout` seconds (0: `max(FLOOR_SECONDS, SLOWEST_STEP_FACTOR x the slowest step so
    far)`) while a `watch()` block runs."""

    def __init__(self, progress: tf.Variable, timeout: float, on_stall, poll: float = 1.0):
        self.progress, self.timeout, self.on_stall, self.poll = progress, timeout, on_stall, poll
        self.slowest = 0.0
        self._watching = threading.Event()
        self._step = self._base = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="step-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching for good (the thread ends)."""
        self._closed = True
        self._watching.set()

    def budget(self) -> float:
        """Seconds without a completed step after which the run counts as stuck."""
        return self.timeout or max(FLOOR_SECONDS, SLOWEST_STEP_FACTOR * self.slowest)

    def record(self, seconds_per_step: float) -> None:
        """The time a step took (averaged over a call of the training loop)."""
        self.slowest = max(self.slowest, seconds_per_step)

    @contextlib.contextmanager
    def watch(self, step: int):
        """Inside, the training loop runs from global step `step`."""
        self._step, self._base = step, int(self.progress.numpy())
        self._watching.set()
        try:
            yield
        finally:
            self._watching.clear()

    def _run(self) -> None:
        last, since = None, time.monotonic()
        while True:
            if not self._watching.is_set():
                self._watching.wait()
                last = None  # a new call of the loop: its time counts from now
            if self._closed:
                return
            value = int(self.progress.numpy())
            now = time.monotonic()
            if value != last:
                last, since = value, now
            elif now - since > self.budget() and self._watching.is_set():
                self.on_stall(f"no training step completed for {now - since:.0f} s after step "
                              f"{self._step + value - self._base} (the limit: {self.budget():.0f} s, --step_timeout): "
                              f"this worker's input, or a peer, is stuck")
                return
            time.sleep(self.poll)
