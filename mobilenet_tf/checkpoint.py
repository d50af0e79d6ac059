"""The checkpoint-manager callback: saves every N steps and at each epoch's end, resumes the newest.

What an exact resume needs is the model (weights and BN statistics), the optimizer (slots and
`iterations`, which is the global step); the data order is a pure function of (seed, epoch), so
the step alone says where in the data the run stands.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging


class CheckpointManagerCallback(keras.callbacks.Callback):
    """Keras callback around `tf.train.CheckpointManager`, driven by the training loop.

    Only the chief writes to `directory`; other workers (which must take part in saving under
    MultiWorkerMirroredStrategy) write to a temporary directory that is removed again.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, *, step, every_steps: int = 0,
                 keep: int = 3, is_chief: bool = True):
        super().__init__()
        self._step = step
        self._every = every_steps
        self._scratch = None if is_chief else tempfile.mkdtemp(prefix="mobilenet_tf_worker_ckpt_")
        self.manager = tf.train.CheckpointManager(checkpoint, self._scratch or directory, max_to_keep=keep)
        self._last_saved = None

    @property
    def step(self) -> int:
        return int(self._step.numpy())

    def restore(self) -> int:
        """Restore the newest checkpoint, if any; the global step the run continues from."""
        path = self.manager.latest_checkpoint
        if path:
            self.manager.checkpoint.restore(path).assert_existing_objects_matched()
            logging.info("Restored %s (step %d)", path, self.step)
            self._last_saved = self.step
        return self.step

    def save(self) -> None:
        step = self.step
        if step != self._last_saved:
            self.manager.save(checkpoint_number=step)
            self._last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        if self._every and self.step % self._every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def on_train_end(self, logs=None):
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


def latest(model_dir: str) -> str | None:
    return tf.train.latest_checkpoint(model_dir)
