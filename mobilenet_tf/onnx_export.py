"""ONNX export of the pixel model, and an ONNX Runtime runner.

`<export_dir>/onnx/model.onnx` takes `images`, float32 RGB pixels 0-255 `[batch, H, W, 3]` (or
`[batch, 3, H, W]` with `nchw`), preprocessed as evaluation does (center crop, resize:
`model_info.json` beside it says how), normalizes inside and returns `probabilities`
`[batch, classes]`; the batch axis is named `batch`. The encoded-bytes signature of the SavedModel
has no ONNX counterpart (ONNX has no image decoder).

Converted by tf2onnx 1.17.0, the only release that installs beside TensorFlow 2.21; opset 17 by
default (18 turns the pooling into ReduceMean between two Transposes; tf2onnx 1.17 refuses 19 and
up). Our fused batch norm folds into the convolutions. V3's hard-swish and hard-sigmoid, which
tf2onnx spells out as Add, Clip and Mul nodes, become ONNX's HardSwish (opset 14 on) and HardSigmoid.
A quantization-aware run's fake-quant ops become QuantizeLinear/DequantizeLinear pairs.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from mobilenet_tf import export
from mobilenet_tf.config import ONNX_INSTALL, Config, ExportConfig
from mobilenet_tf.errors import UserError
from mobilenet_tf.rundir import write_atomic

DIR = "onnx"
FILE = "model.onnx"
DEFAULT_OPSET = ExportConfig.onnx_opset
INPUT, OUTPUT = "images", "probabilities"


class OnnxError(UserError, RuntimeError):
    """The ONNX extra is missing, or a model could not be converted; the message says what to do."""


def model_path(export_base: str) -> str:
    return os.path.join(export_base, DIR, FILE)


def tf2onnx_convert():
    """tf2onnx's convert module; OnnxError saying what to install when tf2onnx is missing."""
    try:
        import tf2onnx  # noqa: F401
        import tf2onnx.convert
    except ImportError as error:
        raise OnnxError(f"--onnx needs tf2onnx, which is not installed ({error}); {ONNX_INSTALL}") from None
    return tf2onnx.convert


def convert(model, image_size, opset: int = DEFAULT_OPSET, nchw: bool = False):
    """The onnx.ModelProto of the 0-255 pixel `model` (see `export.serving_model`)."""
    converter = tf2onnx_convert()
    import onnx

    spec = [tf.TensorSpec([None, *image_size, 3], tf.float32, name=INPUT)]
    # tf2onnx logs each op it leaves unconverted (TensorFlow's Erfc: see `_erfc_as_erf`); what is
    # left once ours are rewritten fails the checker below, in one line.
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.CRITICAL)
    try:
        proto, _ = converter.from_function(
            tf.function(lambda images: model(images, training=False)), input_signature=spec, opset=opset,
            inputs_as_nchw=[INPUT] if nchw else None,
        )
        _rename_output(proto, OUTPUT)
        _erfc_as_erf(proto)
        _fuse_hard_activations(proto, opset)
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # tf2onnx raises bare Exceptions and ValueErrors, the checker ValidationError
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise OnnxError(f"tf2onnx could not convert this model to opset {opset}: {first}") from None
    finally:
        tf2onnx_logger.setLevel(level)
    return proto


def _rename_output(proto, name: str) -> None:
    """Name the graph's (single) output `name`, in the graph and in the node producing it."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if out == old else out for out in node.output]
        node.input[:] = [name if inp == old else inp for inp in node.input]
    proto.graph.output[0].name = name


def _erfc_as_erf(proto) -> None:
    """TensorFlow's exact GELU (V4-Hybrid-L) is 0.5 x erfc(-x / sqrt 2), and ONNX has no Erfc: each
    Erfc(x) becomes 1 - Erf(x), in place."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    if not any(node.op_type == "Erfc" for node in graph.node):
        return
    one = "erfc_one"
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    nodes = []
    for node in graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        erf = f"{node.name}_erf"
        nodes += [helper.make_node("Erf", [node.input[0]], [erf], name=erf),
                  helper.make_node("Sub", [one, erf], [node.output[0]], name=node.name)]
    del graph.node[:]
    graph.node.extend(nodes)


def _fuse_hard_activations(proto, opset: int) -> None:
    """Replace tf2onnx's spelling of Keras' hard-swish, x * (clip(x + 3, 0, 6) * 1/6), by one HardSwish
    node (opset 14 on), and of its hard-sigmoid, clip(x + 3, 0, 6) * 1/6, by one HardSigmoid
    (alpha 1/6, beta 0.5: the same function), in place."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def scalar(name, value) -> bool:
        return name in constants and constants[name].size == 1 and abs(float(constants[name].ravel()[0]) - value) < 1e-6

    def only_consumer(node, op_type):
        users = consumers.get(node.output[0], [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    replaced, added = set(), []
    for add in graph.node:
        if add.op_type != "Add" or not any(scalar(name, 3.0) for name in add.input):
            continue
        x = next(name for name in add.input if not scalar(name, 3.0))
        clip = only_consumer(add, "Clip")
        if clip is None or len(clip.input) != 3 or not (scalar(clip.input[1], 0.0) and scalar(clip.input[2], 6.0)):
            continue
        sixth = only_consumer(clip, "Mul")
        if sixth is None or not any(scalar(name, 1 / 6) for name in sixth.input):
            continue
        times_x = only_consumer(sixth, "Mul")
        if times_x is not None and x in times_x.input and opset >= 14:
            fused, chain = helper.make_node("HardSwish", [x], [times_x.output[0]], name=times_x.name), (add, clip, sixth,
                                                                                                        times_x)
        else:
            fused, chain = helper.make_node("HardSigmoid", [x], [sixth.output[0]], name=sixth.name, alpha=1 / 6,
                                            beta=0.5), (add, clip, sixth)
        replaced.update(id(node) for node in chain)
        added.append((add, fused))
    if not added:
        return
    # Each fused node takes its chain's place: its input exists there and its output is read only later.
    at = {id(add): fused for add, fused in added}
    nodes = [at.get(id(node), node) for node in graph.node if id(node) not in replaced or id(node) in at]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(proto)


def write_model(model, cfg: Config, export_base: str, opset: int = DEFAULT_OPSET, nchw: bool = False) -> str:
    """Write `<export_base>/onnx/model.onnx` with labels.txt and model_info.json; its path."""
    proto = convert(export.serving_model(model, cfg), cfg.model.image_size, opset, nchw)
    directory = os.path.join(export_base, DIR)
    h, w = cfg.model.image_size
    export.write_sidecar(directory, cfg, layout=f"NCHW [batch, 3, {h}, {w}]" if nchw else f"NHWC [batch, {h}, {w}, 3]",
                         input=INPUT, output=OUTPUT, opset=opset)
    path = model_path(export_base)
    write_atomic(path, proto.SerializeToString())
    return path


class OnnxModel:
    """An ONNX classifier on ONNX Runtime: float 0-255 pixels [n, H, W, 3] -> float32 probabilities.

    NCHW models get their input transposed here, so callers always pass NHWC pixels.
    """

    def __init__(self, path: str, providers=None, num_threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise OnnxError(f"running an ONNX model needs onnxruntime ({error}); {ONNX_INSTALL}") from None
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=list(providers or ["CPUExecutionProvider"]))
        shape = self.session.get_inputs()[0].shape
        self.nchw = shape[1] == 3 and shape[3] != 3
        self.image_size = (int(shape[2]), int(shape[3])) if self.nchw else (int(shape[1]), int(shape[2]))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, np.float32)
        if self.nchw:
            pixels = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        return self.session.run(None, {self.input_name: pixels})[0]
