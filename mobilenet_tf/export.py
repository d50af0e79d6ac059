"""SavedModel export in the layout TF Serving reads (`<export_base>/<version>/`), TFLite beside it.

The exported model takes 0-255 pixels and normalizes inside (`include_preprocessing=True`). Its
`serving_default` signature takes a 1-D tf.string batch of encoded images (JPEG, PNG, GIF, BMP;
gray or RGB), preprocessed exactly as evaluation preprocesses them; `serving_pixels` takes float
0-255 pixels [batch, H, W, 3]. Bytes that are not such an image, or whose header announces more
than `cfg.export.max_pixels` pixels, fail their request with InvalidArgument before anything is
decoded. `assets.extra/tf_serving_warmup_requests` holds PredictionLog records TF Serving replays
when it loads the version, so the first real request does not pay for graph initialization.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from mobilenet_tf.config import Config
from mobilenet_tf.data import preprocess
from mobilenet_tf.models.build import build_from_config, copy_weights
from mobilenet_tf.paths import next_version

LABELS_FILE = "labels.txt"
INFO_FILE = "model_info.json"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
NOT_AN_IMAGE = "not an image: the request bytes must be a JPEG, PNG, GIF or BMP file"


def serving_model(model: keras.Model, cfg: Config, quantized: bool | None = None) -> keras.Model:
    """A float32 copy of `model` that takes 0-255 pixels (weights copied by layer name).

    For a quantization-aware run it is the fake-quantized twin (what its training evaluated), or
    with `quantized=False` the float model underneath (the same weights, batch norm unfolded).
    """
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    model_cfg = cfg.model if quantized is None else dataclasses.replace(cfg.model, qat=quantized)
    try:
        exported = build_from_config(model_cfg, weight_decay=0.0, include_preprocessing=True)
    finally:
        keras.config.set_dtype_policy(policy)
    copy_weights(model, exported)
    return exported


@tf.autograph.experimental.do_not_convert
def header_size(encoded: tf.Tensor) -> tf.Tensor:
    """int64 [height, width] read from the header of a JPEG, PNG, GIF or BMP; [0, 0] for other bytes.

    Only the header is read, so a decompression bomb costs nothing to measure.
    """
    # Padding lets every fixed-offset read below run on short (non-image) inputs.
    padded = tf.strings.join([encoded, tf.constant(b"\0" * 32)])

    def starts_with(magic: bytes):
        return tf.equal(tf.strings.substr(padded, 0, len(magic)), magic)

    def field(offset, dtype, little_endian):
        raw = tf.strings.substr(padded, offset, dtype.size)
        return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64)

    # PNG: the IHDR chunk right after the signature, big-endian width then height.
    png = tf.stack([field(20, tf.int32, False), field(16, tf.int32, False)])
    # GIF: the logical screen, little-endian 16-bit width then height.
    gif = tf.stack([field(8, tf.uint16, True), field(6, tf.uint16, True)])
    # BMP: BITMAPINFOHEADER, signed 32-bit width then height (negative height: top-down rows).
    bmp = tf.abs(tf.stack([field(22, tf.int32, True), field(18, tf.int32, True)]))
    other = tf.where(starts_with(b"\x89PNG\r\n\x1a\n"), png,
                     tf.where(starts_with(b"GIF8"), gif, tf.where(starts_with(b"BM"), bmp, tf.zeros([2], tf.int64))))
    # A JPEG's size sits in its frame header, wherever that is: extract_jpeg_shape finds it.
    return tf.cond(tf.io.is_jpeg(encoded),
                   lambda: tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64), lambda: other)


def checked_eval_pixels(encoded, image_size, crop_fraction: float, max_pixels: int,
                        transform: str = "crop_bilinear") -> tf.Tensor:
    """`preprocess.eval_pixels` of `encoded`, after refusing (InvalidArgumentError), from the header
    alone, bytes that are not an image and images of more than `max_pixels` pixels."""
    size = header_size(encoded)
    pixels = tf.reduce_prod(size)
    checks = [
        tf.debugging.Assert(pixels > 0, [NOT_AN_IMAGE]),
        tf.debugging.Assert(pixels <= max_pixels, [
            f"image refused: more than the {max_pixels / 1e6:g} megapixel limit; its header says height, width", size,
        ]),
    ]
    with tf.control_dependencies(checks):
        encoded = tf.identity(encoded)
    return preprocess.eval_pixels(encoded, image_size, crop_fraction, transform)


def batch_pixels(images, image_size, crop_fraction: float, max_pixels: int, transform: str = "crop_bilinear"):
    """float32 [n, H, W, 3] 0-255 of a 1-D tf.string batch, each image through `checked_eval_pixels`."""
    return tf.map_fn(
        lambda encoded: checked_eval_pixels(encoded, image_size, crop_fraction, max_pixels, transform),
        images,
        fn_output_signature=tf.TensorSpec([*image_size, 3], tf.float32),
    )


class Servable(tf.Module):
    """The serving signatures around a 0-255 model."""

    def __init__(self, model: keras.Model, class_names, image_size, crop_fraction: float, top_k: int,
                 labels_path: str, max_pixels: int, transform: str = "crop_bilinear"):
        super().__init__()
        self.model = model
        self.labels = tf.saved_model.Asset(labels_path)
        self._class_names = tf.constant(list(class_names))
        self._image_size = tuple(image_size)
        self._crop_fraction = crop_fraction
        self._transform = transform
        self._top_k = min(top_k, len(class_names))
        self._max_pixels = max_pixels

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
        return self._outputs(batch_pixels(images, self._image_size, self._crop_fraction, self._max_pixels,
                                          self._transform))

    @tf.function
    def serve_pixels(self, pixels):
        return self._outputs(tf.cast(pixels, tf.float32))


KERAS_DIR = "keras"


def portable(model: keras.Model) -> keras.Model:
    """`model` with Keras' own layers where ours differ only while training: Keras'
    BatchNormalization for ours (fused, replica-averaged) and no stochastic depth (the identity at
    inference). The same outputs; a `.keras` file of it loads in a Keras without this package
    unless it has layers of ours that compute (V4-Hybrid's attention and layer scale, the
    quantization-aware twin's quantizers)."""
    from mobilenet_tf.models.layers import BatchNormalization
    from mobilenet_tf.models.mobilenet_v4 import StochasticDepth

    def clone(layer):
        if type(layer) is BatchNormalization:
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        if isinstance(layer, StochasticDepth):
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy_weights(model, copy)
    return copy


def write_keras(model: keras.Model, cfg: Config, export_base: str) -> str:
    """Write `<export_base>/keras/model.keras` (`portable` 0-255 model, through a temporary name)
    with labels.txt and model_info.json beside it; its path."""
    directory = os.path.join(export_base, KERAS_DIR)
    write_sidecar(directory, cfg)
    path = os.path.join(directory, "model.keras")
    tmp = os.path.join(directory, f".model-{os.getpid()}.keras")  # Keras writes only to *.keras
    try:
        portable(serving_model(model, cfg)).save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_sidecar(directory: str, cfg: Config, **info) -> None:
    """labels.txt (one class name per line) and model_info.json (input size, crop and what `info`
    adds) in `directory`: what every pixel-model format (TFLite, ONNX) ships beside its file."""
    from mobilenet_tf.rundir import write_atomic

    os.makedirs(directory, exist_ok=True)
    info = {
        "model": cfg.model.describe(),
        "image_size": list(cfg.model.image_size),
        "crop_fraction": cfg.data.eval_crop_fraction,
        "transform": cfg.data.eval_transform,
        "input": "RGB pixels 0-255, cropped and resized to image_size by transform: crop_bilinear, the central "
                 "crop_fraction of the shorter side, bilinear resize; timm_bicubic/timm_bilinear, timm's: the shorter "
                 "side resized to image_size / crop_fraction, then the central crop",
        **info,
    }
    write_atomic(os.path.join(directory, LABELS_FILE), labels_text(cfg.model.class_names))
    write_atomic(os.path.join(directory, INFO_FILE), json.dumps(info, indent=1))


def read_sidecar(directory: str) -> tuple[tuple[str, ...], dict]:
    """(class names, model info) that `write_sidecar` wrote in `directory`."""
    names = read_labels(os.path.join(directory, LABELS_FILE))
    with open(os.path.join(directory, INFO_FILE)) as f:
        return names, json.load(f)


def labels_text(class_names) -> str:
    """The contents of a labels.txt (SavedModel asset, TFLite and ONNX sidecar): a name per line."""
    return "".join(f"{name}\n" for name in class_names)


def read_labels(path: str) -> tuple[str, ...]:
    """The class names of a labels.txt that `labels_text` wrote."""
    with open(path) as f:
        return tuple(line.rstrip("\n") for line in f)


def warmup_images(image_size) -> dict[str, bytes]:
    """Small encoded test images (a colour gradient) in the formats clients send."""
    height, width = image_size
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * y / max(height - 1, 1), 255 * x / max(width - 1, 1), np.full_like(y, 128.0)], axis=-1)
    rgb = rgb.astype(np.uint8)
    gray = rgb[:, :, :1]
    large = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)
    return {
        "jpeg": tf.io.encode_jpeg(rgb, quality=90).numpy(),
        "png_gray": tf.io.encode_png(gray).numpy(),
        "jpeg_large": tf.io.encode_jpeg(large, quality=90).numpy(),
    }


def warmup_requests(image_size) -> list:
    """PredictionLog records for TF Serving's warm-up: each signature, batches of 1 and 3."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    images = warmup_images(image_size)
    pixels = tf.cast(tf.io.decode_jpeg(images["jpeg"], channels=3), tf.float32)[None]
    inputs = [
        ("serving_default", "images", tf.make_tensor_proto([images["jpeg"]], dtype=tf.string)),
        ("serving_default", "images", tf.make_tensor_proto(list(images.values()), dtype=tf.string)),
        ("serving_pixels", "pixels", tf.make_tensor_proto(pixels.numpy())),
    ]
    logs = []
    for signature, name, tensor in inputs:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = signature
        request.inputs[name].CopyFrom(tensor)
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def export_saved_model(model: keras.Model, cfg: Config, export_base: str, version: int | None = None) -> str:
    """Write the SavedModel to `<export_base>/<version>/` (through a temporary name); its path.

    Raises:
      FileExistsError: `version` is given and already exported.
    """
    class_names = cfg.model.class_names
    exported = serving_model(model, cfg)
    os.makedirs(export_base, exist_ok=True)
    version = version or next_version(export_base)
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists: versions are never overwritten (TF Serving may be serving it)")
    # TF Serving ignores names that are not integers, so the temporary directory is never served.
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        labels_path = os.path.join(tmp, LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write(labels_text(class_names))
        servable = Servable(exported, class_names, cfg.model.image_size, cfg.data.eval_crop_fraction,
                            cfg.export.top_k, labels_path, cfg.export.max_pixels, cfg.data.eval_transform)
        pixels_spec = tf.TensorSpec([None, *cfg.model.image_size, 3], tf.float32, name="pixels")
        saved = os.path.join(tmp, "saved_model")
        tf.saved_model.save(
            servable, saved,
            signatures={
                "serving_default": servable.serve_bytes,
                "serving_pixels": servable.serve_pixels.get_concrete_function(pixels_spec),
            },
        )
        os.makedirs(os.path.join(saved, os.path.dirname(WARMUP_FILE)))
        with tf.io.TFRecordWriter(os.path.join(saved, WARMUP_FILE)) as writer:
            for log in warmup_requests(cfg.model.image_size):
                writer.write(log.SerializeToString())
        os.rename(saved, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
