"""Preemption: SIGTERM or SIGINT ask a training run to stop after the step in flight and save it.

Clusters give a preempted job a grace period (30 s on most clouds, SLURM's `--signal=TERM@60`,
Kubernetes' `terminationGracePeriodSeconds`) before they kill it. The training loop reads
`SignalFlag.flag` in every step and sums it over all replicas and workers, so every worker of a
multi-worker run stops after the same step (as `tf.distribute.experimental.PreemptionCheckpointHandler`
agrees on one), saves a checkpoint there, and the command exits with `EXIT_PREEMPTED`: a
supervisor restarts it, and it resumes at that step.
"""

from __future__ import annotations

import os
import signal
import threading

import tensorflow as tf
from absl import logging

# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": the run was
# preempted and saved, start the same command again. Every other failure exits 1.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after `step`, saved in `checkpoint`."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f"saved {checkpoint}" if checkpoint else "nothing to save yet"
        super().__init__(f"preempted by {signal_name} at step {step}: {where}; run the same command to resume")


class SignalFlag:
    """While entered, SIGTERM and SIGINT set `flag` (an int32 tf.Variable, 0 until then).

    Python runs signal handlers only between bytecodes, which a step running in TensorFlow's
    runtime never reaches; so the signals wake a thread (`signal.set_wakeup_fd`) that sets the
    variable while the step runs. Further signals (a second Ctrl-C during the save) only log, and
    after a stop on a signal they stay ignored until the process exits.
    Outside the main thread (signals cannot be caught there) the flag never sets.
    """

    def __init__(self):
        self.flag = tf.Variable(0, dtype=tf.int32, trainable=False, name="preempt_requested")
        self.signal_name: str | None = None
        self._saved = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        handlers = {number: signal.signal(number, lambda *_: None) for number in SIGNALS}
        wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._saved = (handlers, wakeup, read_fd, write_fd)
        threading.Thread(target=self._watch, args=(read_fd,), name="preemption-watch", daemon=True).start()
        return self

    def _watch(self, read_fd: int) -> None:
        while True:
            received = os.read(read_fd, 64)
            if not received:  # __exit__ closed the write end
                os.close(read_fd)
                return
            for number in received:
                if number not in SIGNALS:
                    continue
                if self.signal_name is None:
                    self.signal_name = signal.Signals(number).name
                    logging.warning("%s received: stopping after the step in flight and saving a checkpoint",
                                    self.signal_name)
                    self.flag.assign(1)
                else:
                    logging.warning("%s received again: still saving", signal.Signals(number).name)

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        handlers, wakeup, read_fd, write_fd = self._saved
        signal.set_wakeup_fd(wakeup)
        for number, handler in handlers.items():
            # Once stopping on a signal, the process is on its way out: later signals are ignored,
            # not turned into a KeyboardInterrupt at exit.
            signal.signal(number, signal.SIG_IGN if self.signal_name else handler)
        os.close(write_fd)  # the watch thread reads the end of the pipe and closes its own end
        self._saved = None
        return False
