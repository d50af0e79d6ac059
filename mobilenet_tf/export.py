"""SavedModel export in the layout TF Serving reads: `<export_base>/<version>/`.

The exported model takes 0-255 pixels and normalizes inside (`include_preprocessing=True`), and
its `serving_default` signature takes a 1-D tf.string batch of encoded images (JPEG, PNG, GIF, BMP;
gray or RGB), preprocessed exactly as evaluation preprocesses them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from mobilenet_tf.config import Config
from mobilenet_tf.data import preprocess
from mobilenet_tf.models import build_from_config, copy_weights

LABELS_FILE = "labels.txt"


def serving_model(model: keras.Model, cfg: Config) -> keras.Model:
    """A float32 copy of `model` that takes 0-255 pixels (weights copied by layer name)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        exported = build_from_config(cfg.model, weight_decay=0.0, include_preprocessing=True)
    finally:
        keras.config.set_dtype_policy(policy)
    copy_weights(model, exported)
    return exported


class Servable(tf.Module):
    """The serving signatures around a 0-255 model."""

    def __init__(self, model: keras.Model, class_names, image_size, crop_fraction: float, top_k: int, labels_path: str):
        super().__init__()
        self.model = model
        self.labels = tf.saved_model.Asset(labels_path)
        self._class_names = tf.constant(list(class_names))
        self._image_size = tuple(image_size)
        self._crop_fraction = crop_fraction
        self._top_k = min(top_k, len(class_names))

    def _outputs(self, pixels):
        probabilities = tf.cast(self.model(pixels, training=False), tf.float32)
        scores, classes = tf.math.top_k(probabilities, k=self._top_k)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "scores": scores,
            "class_names": tf.gather(self._class_names, classes),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_bytes(self, images):
        pixels = tf.map_fn(
            lambda encoded: preprocess.eval_pixels(encoded, self._image_size, self._crop_fraction),
            images,
            fn_output_signature=tf.TensorSpec([*self._image_size, 3], tf.float32),
        )
        return self._outputs(pixels)

    @tf.function
    def serve_pixels(self, pixels):
        return self._outputs(tf.cast(pixels, tf.float32))


def next_version(export_base: str) -> int:
    """One more than the largest integer-named version under `export_base` (1 when none)."""
    versions = [int(d) for d in os.listdir(export_base) if re.fullmatch(r"\d+", d)] if os.path.isdir(export_base) else []
    return max(versions, default=0) + 1


def export_saved_model(model: keras.Model, cfg: Config, export_base: str, version: int | None = None) -> str:
    """Write the SavedModel to `<export_base>/<version>/` (through a temporary name); its path."""
    class_names = cfg.model.class_names
    exported = serving_model(model, cfg)
    os.makedirs(export_base, exist_ok=True)
    version = version or next_version(export_base)
    final = os.path.join(export_base, str(version))
    # TF Serving ignores names that are not integers, so the temporary directory is never served.
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        labels_path = os.path.join(tmp, LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write("".join(f"{name}\n" for name in class_names))
        servable = Servable(exported, class_names, cfg.model.image_size, cfg.data.eval_crop_fraction,
                            cfg.export.top_k, labels_path)
        pixels_spec = tf.TensorSpec([None, *cfg.model.image_size, 3], tf.float32, name="pixels")
        saved = os.path.join(tmp, "saved_model")
        tf.saved_model.save(
            servable, saved,
            signatures={
                "serving_default": servable.serve_bytes,
                "serving_pixels": servable.serve_pixels.get_concrete_function(pixels_spec),
            },
        )
        os.rename(saved, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
