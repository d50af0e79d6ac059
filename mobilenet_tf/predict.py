"""Classifying encoded images with a trained model in any form it ships in, and scoring it on a split.

`load(path)` takes a SavedModel directory (or a model base path of integer versions: the newest), a
`.tflite` or `.onnx` file written by `mobilenet-export`, or a training run's model_dir (its newest
checkpoint). Each gives a `Classifier` mapping encoded image bytes to probabilities with the
evaluation preprocessing: the SavedModel through its own `serving_default` signature (what TF
Serving runs), the others through `export.checked_eval_pixels`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from mobilenet_tf import config, export, paths, tflite
from mobilenet_tf.data import tfrecord


class Classifier:
    """Encoded images (JPEG, PNG, GIF, BMP) -> float32 probabilities [n, classes].

    `predict` raises tf.errors.InvalidArgumentError when any of the bytes is not an image.
    """

    kind: str
    class_names: tuple[str, ...]

    def predict(self, encoded) -> np.ndarray:
        raise NotImplementedError


class SavedModelClassifier(Classifier):
    kind = "saved_model"

    def __init__(self, path: str):
        self.path = path
        self._serve = tf.saved_model.load(path).signatures["serving_default"]
        self.class_names = export.read_labels(os.path.join(path, "assets", export.LABELS_FILE))

    def predict(self, encoded) -> np.ndarray:
        return self._serve(images=tf.convert_to_tensor(encoded, tf.string))["probabilities"].numpy()


class _PixelClassifier(Classifier):
    """Decodes and preprocesses in TensorFlow, then runs `self._model` on 0-255 pixels."""

    def __init__(self, image_size, crop_fraction: float, max_pixels: int, transform: str = "crop_bilinear"):
        self.image_size = tuple(image_size)
        self._pixels = tf.function(
            lambda images: export.batch_pixels(images, self.image_size, crop_fraction, max_pixels, transform),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )

    def predict(self, encoded) -> np.ndarray:
        return np.asarray(self._model(self._pixels(tf.convert_to_tensor(encoded, tf.string)).numpy()), np.float32)


class _SidecarClassifier(_PixelClassifier):
    """A model file with the labels.txt and model_info.json `mobilenet-export` writes beside it;
    `open_model(path)` runs it (0-255 pixels -> probabilities) and knows its `image_size`."""

    def __init__(self, path: str, open_model):
        self.class_names, info = export.read_sidecar(os.path.dirname(os.path.abspath(path)))
        self.path = path
        self._model = open_model(path)
        super().__init__(self._model.image_size, info["crop_fraction"], config.ExportConfig().max_pixels,
                         info.get("transform", "crop_bilinear"))


class TFLiteClassifier(_SidecarClassifier):
    """A .tflite model on LiteRT."""

    kind = "tflite"

    def __init__(self, path: str, num_threads: int | None = None):
        super().__init__(path, lambda model_path: tflite.LiteRTModel(model_path, num_threads=num_threads))


class OnnxClassifier(_SidecarClassifier):
    """A .onnx model on ONNX Runtime."""

    kind = "onnx"

    def __init__(self, path: str, providers=None, num_threads: int | None = None):
        from mobilenet_tf import onnx_export

        super().__init__(path, lambda model_path: onnx_export.OnnxModel(model_path, providers=providers,
                                                                        num_threads=num_threads))


class CheckpointClassifier(_PixelClassifier):
    """The newest checkpoint of a training run (EMA weights when the run kept them)."""

    kind = "checkpoint"

    def __init__(self, model_dir: str, checkpoint_path: str | None = None, ema: bool = True):
        from mobilenet_tf.checkpoint import restore_model

        model, cfg = restore_model(model_dir, checkpoint_path, ema=ema)
        self.path = model_dir
        self.cfg = cfg
        self.class_names = tuple(cfg.model.class_names)
        serving = export.serving_model(model, cfg)
        self._model = tf.function(lambda pixels: serving(pixels, training=False))
        super().__init__(cfg.model.image_size, cfg.data.eval_crop_fraction, cfg.export.max_pixels,
                         cfg.data.eval_transform)


def load(path: str, *, ema: bool = True, num_threads: int | None = None, providers=None) -> Classifier:
    """The Classifier of `path` (see the module docstring); `providers`: ONNX Runtime's, for .onnx.

    Raises:
      ValueError: `path` is none of the forms above.
    """
    kind = paths.kind_of(path)
    if kind == "tflite":
        return TFLiteClassifier(path, num_threads=num_threads)
    if kind == "onnx":
        return OnnxClassifier(path, providers=providers, num_threads=num_threads)
    if kind == "saved_model":
        return SavedModelClassifier(path)
    if kind == "checkpoint":
        return CheckpointClassifier(path, ema=ema)
    if kind == "model_base":
        return SavedModelClassifier(os.path.join(path, str(paths.next_version(path) - 1)))
    raise ValueError(f"{path} is not a SavedModel directory, a .tflite or .onnx file or a training run's model_dir")


def top_k(probabilities: np.ndarray, class_names, k: int) -> list[list[tuple[str, float]]]:
    """Per row, the k most probable (class name, probability), most probable first."""
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [[(class_names[i], float(row[i])) for i in idx] for row, idx in zip(probabilities, order)]


def collect(classifier: Classifier, info: tfrecord.DatasetInfo, split: str = "validation", batch_size: int = 64,
            on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n], probabilities [n, classes]) of `classifier` on the encoded images of `split`, in
    file order; `on_batch(offset, encoded, labels, probabilities)` sees each batch on the way
    (`offset`: the index of its first example)."""
    labels, probabilities, offset = [np.zeros([0], np.int32)], [np.zeros([0, len(classifier.class_names)], np.float32)], 0
    for encoded, batch_labels in info.records(split).batch(batch_size).prefetch(2).as_numpy_iterator():
        batch_probabilities = classifier.predict(encoded)
        if on_batch:
            on_batch(offset, encoded, batch_labels, batch_probabilities)
        labels.append(batch_labels)
        probabilities.append(batch_probabilities)
        offset += len(batch_labels)
    return np.concatenate(labels), np.concatenate(probabilities)


def scores(labels, probabilities, num_classes: int) -> dict:
    """{"top1", "top5", "examples"} of probabilities [n, classes] against labels [n].

    Ties are broken as `top_k` breaks them (lower class index first), not counted as hits as
    `tf.math.in_top_k` counts them: int8 probabilities come in steps of 1/256, and ties are common.
    """
    labels = np.asarray(labels)
    ranked = np.argsort(-np.asarray(probabilities), axis=-1, kind="stable")[:, :min(5, num_classes)]
    examples = len(labels)
    return {"top1": int(np.sum(ranked[:, 0] == labels)) / max(examples, 1),
            "top5": int(np.sum(ranked == labels[:, None])) / max(examples, 1), "examples": examples}


def evaluate(classifier: Classifier, info: tfrecord.DatasetInfo, split: str = "validation",
             batch_size: int = 64) -> dict:
    """{"top1", "top5", "examples"} of `classifier` on the encoded images of `split` (see `scores`)."""
    return scores(*collect(classifier, info, split, batch_size), len(classifier.class_names))
