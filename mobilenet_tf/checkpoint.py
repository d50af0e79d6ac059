"""The checkpoint-manager callback: saves every N steps and at each epoch's end, resumes the newest.

What an exact resume needs is the model (weights, BN statistics, dropout's seed state), the
optimizer (slots, moving averages, `iterations` which drives the learning rate) and the global
step (steps skipped by loss scaling do not advance `iterations`); the data order is a pure
function of (seed, epoch), so the step alone says where in the data the run stands.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import time

import keras
import tensorflow as tf
from absl import logging

from mobilenet_tf.errors import UserError, WriteFailed, tf_message, write_failure


class NoCheckpoint(UserError, FileNotFoundError):
    """A run directory without a readable checkpoint."""


def checkpoints(directory: str) -> list[str]:
    """The checkpoint prefixes of `directory`, oldest first: those its `checkpoint` file lists, or,
    when that file is unreadable, every `ckpt-N.index` found."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # noqa: BLE001 - a garbled state file raises a protobuf parse error
        state = None
    if state is not None:
        # TF has already joined relative entries to `directory`.
        return [p for p in state.all_model_checkpoint_paths if os.path.isfile(f"{p}.index")]
    found = glob.glob(os.path.join(directory, "ckpt-*.index"))
    numbered = [(int(m.group(1)), p[: -len(".index")]) for p in found
                if (m := re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(p)))]
    return [p for _, p in sorted(numbered)]


def unreadable(path: str) -> str | None:
    """Why the checkpoint `path` cannot be read (a truncated, missing or garbled file), else None.

    Every tensor is read, so the per-tensor checksums of the data files are checked too.
    """
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as error:  # noqa: BLE001 - TF raises OpError, IndexError or ValueError here
        return tf_message(error)
    return None


def set_aside(path: str) -> str:
    """Rename the files of checkpoint `path` to `<path>.corrupt-<time>...` (kept, never deleted)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for file in glob.glob(f"{glob.escape(path)}.*"):
        suffix = file[len(path):]
        if not suffix.startswith(".corrupt-"):
            os.rename(file, f"{path}.corrupt-{stamp}{suffix}")
    return f"{path}.corrupt-{stamp}"


def newest_readable(directory: str, set_aside_unreadable: bool = True) -> str | None:
    """The newest checkpoint of `directory` that reads back whole. Newer unreadable ones are set
    aside (`set_aside`) with a warning naming them, and the `checkpoint` file lists only the rest;
    with `set_aside_unreadable=False` (a multi-worker run's other workers) they are only skipped."""
    paths = checkpoints(directory)
    good = None
    while paths:
        reason = unreadable(paths[-1])
        if reason is None:
            good = paths[-1]
            break
        if not set_aside_unreadable:
            paths.pop()
            continue
        moved = set_aside(paths.pop())
        logging.warning("checkpoint %s is unreadable (%s): moved aside to %s.*; using the one before it",
                        os.path.basename(moved.split(".corrupt-")[0]), reason, os.path.basename(moved))
        if paths:
            tf.compat.v1.train.update_checkpoint_state(directory, paths[-1], all_model_checkpoint_paths=paths)
        else:
            os.remove(os.path.join(directory, "checkpoint"))
    return good


class CheckpointManagerCallback(keras.callbacks.Callback):
    """Keras callback around `tf.train.CheckpointManager`, driven by the training loop.

    Every worker resumes from `directory` (storage all workers reach), but only the chief writes
    there; other workers (which must take part in saving under MultiWorkerMirroredStrategy) write
    to a temporary directory that is removed again.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, *, step, every_steps: int = 0,
                 keep: int = 3, is_chief: bool = True):
        super().__init__()
        self._step = step
        self._every = every_steps
        self._scratch = None if is_chief else tempfile.mkdtemp(prefix="mobilenet_tf_worker_ckpt_")
        self._run_dir, self._directory, self._keep = directory, self._scratch or directory, keep
        self.manager = tf.train.CheckpointManager(checkpoint, self._directory, max_to_keep=keep)
        self._last_saved = None

    @property
    def last_saved(self):
        """The step of the newest checkpoint written or restored (None before any)."""
        return self._last_saved

    @property
    def step(self) -> int:
        return int(self._step.numpy())

    def restore(self) -> int:
        """Restore the newest readable checkpoint, if any (see `newest_readable`); the global step
        the run continues from."""
        path = newest_readable(self._run_dir, set_aside_unreadable=not self._scratch)
        # A new manager: the one above may have read a `checkpoint` file that listed set-aside ones.
        self.manager = tf.train.CheckpointManager(self.manager.checkpoint, self._directory, max_to_keep=self._keep)
        if path:
            self.manager.checkpoint.restore(path).assert_existing_objects_matched()
            logging.info("Restored %s (step %d)", path, self.step)
            self._last_saved = self.step
        return self.step

    def save(self) -> str | None:
        """Save at the current step (once); the newest checkpoint's path.

        Raises:
          WriteFailed: the file system refused the write (full disk, I/O error); the partial files
            are removed and the checkpoints before stay as they were.
        """
        step = self.step
        if step != self._last_saved:
            try:
                self.manager.save(checkpoint_number=step)
            except (OSError, tf.errors.OpError) as error:
                reason = write_failure(error)
                if reason is None:
                    raise
                shutil.rmtree(os.path.join(self._directory, f"ckpt-{step}_temp"), ignore_errors=True)
                newest = f" is still {os.path.basename(self.manager.latest_checkpoint)}" \
                    if self.manager.latest_checkpoint else ": none yet"
                raise WriteFailed(f"cannot write checkpoint ckpt-{step} ({reason}); the newest checkpoint{newest}. "
                                  f"Free space and run the same command: it resumes from there") from None
            self._last_saved = step
        return self.manager.latest_checkpoint

    def on_train_batch_end(self, batch, logs=None):
        if self._every and self.step % self._every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def on_train_end(self, logs=None):
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


def write_pretrained_run(cfg, model_dir: str) -> str:
    """A run directory for `cfg.train.pretrained` as it is, without training: the model with those
    weights as its checkpoint `ckpt-0`, and `cfg` as its config.json, so that export, eval,
    predict, the demo and --init_checkpoint take it like any run. The weights are loaded (and
    checked) before anything is written. Returns what filled the model (see `load_pretrained`).
    """
    from mobilenet_tf import config
    from mobilenet_tf.models.build import build_from_config
    from mobilenet_tf.models.pretrained import load_pretrained

    model = build_from_config(cfg.model, weight_decay=0.0)
    source = load_pretrained(model, cfg.model, cfg.train.pretrained)
    os.makedirs(model_dir, exist_ok=True)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), model_dir, max_to_keep=1)
    try:
        manager.save(checkpoint_number=0)
        config.save(cfg, model_dir)
    except (OSError, tf.errors.OpError) as error:
        reason = write_failure(error)
        if reason is None:
            raise
        raise WriteFailed(f"cannot write the run in {model_dir} ({reason})") from None
    return source


def restore_model(model_dir: str, checkpoint_path: str | None = None, *, ema: bool = True, set_aside: bool = True):
    """(model, cfg) of a training run: its config.json, its newest readable checkpoint (unreadable
    newer ones are set aside, see `newest_readable`, or with `set_aside=False` only skipped), or
    `checkpoint_path`.

    When the run kept a moving average of the weights (`ema_decay` > 0) and `ema` is True, the
    model holds the averaged weights, which is what evaluation and export use.

    Raises:
      NoCheckpoint: `model_dir` has no readable checkpoint.
    """
    from mobilenet_tf import config, optim
    from mobilenet_tf.models.build import build_from_config

    cfg = config.load(model_dir)
    path = checkpoint_path or newest_readable(model_dir, set_aside_unreadable=set_aside)
    if not path:
        raise NoCheckpoint(f"{model_dir} holds no readable checkpoint; train with mobilenet-train first")
    model = build_from_config(cfg.model, weight_decay=0.0)
    optimizer = optim.build_optimizer(cfg.train, steps_per_epoch=1)
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(path).expect_partial()
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if ema and inner.use_ema:
        inner.finalize_variable_values(model.trainable_variables)
    return model, cfg
