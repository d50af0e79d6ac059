"""The checkpoint-manager callback: saves every N steps and at each epoch's end, resumes the newest.

What an exact resume needs is the model (weights, BN statistics, dropout's seed state), the
optimizer (slots, moving averages, `iterations` which drives the learning rate) and the global
step (steps skipped by loss scaling do not advance `iterations`); the data order is a pure
function of (seed, epoch), so the step alone says where in the data the run stands.
"""

from __future__ import annotations

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
    def last_saved(self):
        """The step of the newest checkpoint written or restored (None before any)."""
        return self._last_saved

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


def restore_model(model_dir: str, checkpoint_path: str | None = None, *, ema: bool = True):
    """(model, cfg) of a training run: its config.json, its newest checkpoint (or `checkpoint_path`).

    When the run kept a moving average of the weights (`ema_decay` > 0) and `ema` is True, the
    model holds the averaged weights, which is what evaluation and export use.

    Raises:
      FileNotFoundError: `model_dir` has no config.json or no checkpoint.
    """
    from mobilenet_tf import config, optim
    from mobilenet_tf.models import build_from_config

    cfg = config.load(model_dir)
    path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if not path:
        raise FileNotFoundError(f"{model_dir} holds no checkpoint")
    model = build_from_config(cfg.model, weight_decay=0.0)
    optimizer = optim.build_optimizer(cfg.train, steps_per_epoch=1)
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path).expect_partial()
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if ema and inner.use_ema:
        inner.finalize_variable_values(model.trainable_variables)
    return model, cfg
