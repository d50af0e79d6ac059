"""TFLite models of an export (float32, float16, dynamic-range, full-integer int8) and a LiteRT runner.

Every model takes RGB pixels 0-255, [1, H, W, 3], preprocessed as evaluation does (center crop of
`crop_fraction` and `transform`; `model_info.json` beside the models says which), and normalizes
inside. `int8` is full-integer: uint8 input (the raw pixel: scale 1, zero point 0), int8 weights
and activations, float32 probabilities out; it is calibrated on training images, or, for a
quantization-aware run, converted from the ranges that training learned. They run through
ai-edge-litert's interpreter (LiteRT), the successor of the deprecated `tf.lite.Interpreter`.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from mobilenet_tf import chatter, export
from mobilenet_tf.config import Config
from mobilenet_tf.data import preprocess, tfrecord
from mobilenet_tf.errors import UserError
from mobilenet_tf.rundir import write_atomic

DIR = "tflite"


def model_path(export_base: str, mode: str) -> str:
    return os.path.join(export_base, DIR, f"model_{mode}.tflite")


def representative_pixels(info: tfrecord.DatasetInfo, cfg: Config, count: int, seed: int = 0) -> np.ndarray:
    """float32 [count, H, W, 3] 0-255: `count` training images (seeded sample), eval-preprocessed."""
    files = info.files("train")
    # Shuffled files, read 16 at a time, then a shuffle buffer: a sample across the whole split
    # (shards are often written class by class) without opening a thousand files at once.
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16))
    ds = ds.map(lambda record: info.parse(record)[0])
    ds = ds.shuffle(min(info.counts["train"], 10_000), seed=seed).take(count)
    ds = ds.map(lambda encoded: preprocess.eval_pixels(encoded, cfg.model.image_size, cfg.data.eval_crop_fraction,
                                                                 cfg.data.eval_transform))
    return np.concatenate(list(ds.batch(64).as_numpy_iterator()))


def convert(model: keras.Model, image_size, modes, representative: np.ndarray | None = None,
            quantized: bool = False, per_channel: bool = True) -> dict[str, bytes]:
    """{mode: flatbuffer} of the 0-255 `model` (see `export.serving_model`) with batch size 1.

    `representative` (float32 0-255 pixels) calibrates `int8` and is required for it, unless the
    model is a quantization-aware twin (`quantized`): then `int8` takes the ranges the model
    learned, with no calibration at all, and `QuantizationError` is raised if any op is left in
    float. `per_channel=False` quantizes calibrated convolution weights per tensor, as TFLite's
    first int8 scheme did (for measuring what that costs; the exports never do).
    """
    with tempfile.TemporaryDirectory(prefix="mobilenet_tf_tflite_") as saved:
        # A SavedModel of one fixed-shape endpoint: the converter freezes its variables from there.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", lambda pixels: model(pixels, training=False),
            input_signature=[tf.TensorSpec([1, *image_size, 3], tf.float32, name="pixels")],
        )
        archive.write_out(saved, verbose=False)
        flatbuffers = {mode: _convert(saved, mode, representative, quantized, per_channel) for mode in modes}
    if quantized and "int8" in flatbuffers:
        left = float_ops(flatbuffers["int8"])
        if left:
            raise QuantizationError(f"the int8 conversion of the quantization-aware model left {', '.join(left)} in "
                                    f"float")
    return flatbuffers


class QuantizationError(UserError, RuntimeError):
    """A quantization-aware model did not convert to integer-only compute."""


def op_types(flatbuffer: bytes) -> list[tuple[str, str]]:
    """(op name, dtype of its first input) of every op of a .tflite model, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op["op_name"], np.dtype(tensors[op["inputs"][0]]["dtype"]).name)
            for op in interpreter._get_ops_details() if len(op["inputs"])]


def float_ops(flatbuffer: bytes) -> list[str]:
    """The ops of a .tflite model that compute on float tensors. In a full-integer model there are
    none: its uint8 input is QUANTIZEd to int8, every op after that (convolutions, HARD_SWISH, the
    adds and multiplies, the means, the softmax) takes int8, and the last DEQUANTIZEs the int8
    probabilities to float32."""
    return sorted({name for name, dtype in op_types(flatbuffer) if dtype.startswith("float")})


def _convert(saved: str, mode: str, representative, quantized: bool = False, per_channel: bool = True) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter._experimental_disable_per_channel = not per_channel
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8" and quantized:
        # The fake-quant ops carry every range: no representative data, and no supported_ops
        # (TFLITE_BUILTINS_INT8 alone would demand a representative dataset).
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # The uint8 input is the raw pixel (scale 1, zero point 0) only if calibration saw both 0
        # and 255; photos almost always contain both, and one corner pixel makes sure.
        pinned = np.array(representative, np.float32)
        pinned[0, 0, 0, 0], pinned[0, 0, 0, 1] = 0.0, 255.0
        converter.representative_dataset = lambda: ([image[None]] for image in pinned)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    with chatter.filtered("TFLite converter"):
        return converter.convert()


def write_models(model: keras.Model, cfg: Config, export_base: str, modes,
                 representative: np.ndarray | None = None) -> dict[str, str]:
    """Write `<export_base>/tflite/model_<mode>.tflite`, labels.txt and model_info.json; {mode: path}.

    Of a quantization-aware run, `int8` is converted from the fake-quantized model's own ranges
    (never calibrated) and the other modes from the float model underneath it.
    """
    flatbuffers = {}
    float_modes = [mode for mode in modes if not (cfg.model.qat and mode == "int8")]
    if float_modes:
        flatbuffers.update(convert(export.serving_model(model, cfg, quantized=False), cfg.model.image_size,
                                   float_modes, representative))
    if cfg.model.qat and "int8" in modes:
        flatbuffers.update(convert(export.serving_model(model, cfg), cfg.model.image_size, ["int8"], quantized=True))
    export.write_sidecar(os.path.join(export_base, DIR), cfg, layout="NHWC [1, H, W, 3]",
                         int8="quantization-aware training" if cfg.model.qat else "post-training, calibrated")
    paths = {}
    for mode in modes:
        paths[mode] = model_path(export_base, mode)
        write_atomic(paths[mode], flatbuffers[mode])
    return paths


class LiteRTModel:
    """A .tflite classifier on LiteRT: float 0-255 pixels [n, H, W, 3] -> float32 probabilities.

    Quantized inputs and outputs are (de)quantized with the tensors' own scale and zero point.
    """

    def __init__(self, path: str, num_threads: int | None = None, delegate: bool = True):
        """`delegate=False` runs LiteRT's built-in kernels alone, without its XNNPACK delegate."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with chatter.filtered("LiteRT"):  # its "Created TensorFlow Lite XNNPACK delegate" line
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads,
                                           experimental_op_resolver_type=resolver)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_size = tuple(int(d) for d in self.input["shape"][1:3])

    def quantize(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels` as the input tensor holds them (unchanged for a float input)."""
        dtype = self.input["dtype"]
        scale, zero_point = self.input["quantization"]
        if not np.issubdtype(dtype, np.integer):
            return pixels.astype(dtype)
        limits = np.iinfo(dtype)
        return np.clip(np.round(pixels / scale + zero_point), limits.min, limits.max).astype(dtype)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """One already-quantized image [1, H, W, 3] through the interpreter; the raw output."""
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        outputs = [self.invoke(self.quantize(image[None])) for image in np.asarray(pixels, np.float32)]
        probabilities = np.concatenate(outputs)
        if np.issubdtype(self.output["dtype"], np.integer):
            scale, zero_point = self.output["quantization"]
            probabilities = (probabilities.astype(np.float32) - zero_point) * scale
        return probabilities.astype(np.float32)
