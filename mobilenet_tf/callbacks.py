"""TensorBoard scalars and images from the custom loop (the chief's logs only)."""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging


class ScalarsCallback(keras.callbacks.Callback):
    """Writes loss (and its two terms when distilling), top-1, lr, img/s (and skipped bad records,
    when skipping) at the global step to
    `<log_dir>/train`, and the held-out
    top-1/top-5 at each epoch's end to `<log_dir>/validation` (TF Model Garden's layout)."""

    def __init__(self, log_dir: str, step: tf.Variable):
        super().__init__()
        self._step = step
        self._train = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        self._validation = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))
        self._warned = False

    def on_train_batch_end(self, batch, logs=None):
        with self._train.as_default(step=int(self._step.numpy())):
            for name in ("loss", "loss_ce", "loss_distill", "top1", "lr", "img_per_sec", "bad_records"):
                if logs and name in logs:
                    tf.summary.scalar(name, logs[name])

    def on_epoch_end(self, epoch, logs=None):
        with self._validation.as_default(step=int(self._step.numpy())):
            for name in ("top1", "top5"):
                if logs and f"val_{name}" in logs:
                    tf.summary.scalar(name, logs[f"val_{name}"])
        self._train.flush()
        self._validation.flush()

    def confusion_matrix(self, matrix, class_names) -> None:
        """The held-out confusion matrix as an image at the current step (needs matplotlib, in the
        demo extra; up to 100 classes, beyond which a picture of it is unreadable)."""
        from mobilenet_tf import report

        if len(class_names) > 100:
            return
        try:
            picture = report.png(report.confusion_figure(matrix, class_names, "Held-out confusion matrix"))
        except report.ReportError:
            if not self._warned:
                logging.info("No confusion-matrix images in TensorBoard: matplotlib is not installed "
                             "(pip install -e .[demo])")
                self._warned = True
            return
        with self._validation.as_default(step=int(self._step.numpy())):
            tf.summary.image("confusion_matrix", tf.io.decode_png(picture, channels=3)[None])

    def on_train_end(self, logs=None):
        self._train.close()
        self._validation.close()
