"""timm's checkpoints in our models, tensor for tensor.

Which of timm's modules fills which of our layers follows from the spec tables (`build.timm_layers`:
timm numbers its blocks `blocks.<stage>.<index>`, as `stages.place` lays ours out); how a tensor
becomes a Keras weight follows from the layer's type: PyTorch's convolution kernels are
[out, in, h, w] (a depthwise one [channels, 1, h, w]) where Keras' are [h, w, in, out] ([h, w,
channels, 1]); a Linear's [out, in] fills a Dense's [in, out] or a 1x1 conv's [1, 1, in, out];
batch norm's weight, bias, running mean and variance are gamma, beta and the moving statistics.
The tensors are read with numpy (safetensors): no PyTorch.
"""

from __future__ import annotations

import keras
import numpy as np

from mobilenet_tf.models import HEAD_LAYERS, TOP_LAYERS, quantize
from mobilenet_tf.models.build import timm_layers
from mobilenet_tf.models.mobilenet_v4 import LayerScale
from mobilenet_tf.models.timm_archs import TimmCheckpoint, TimmError


def _conv_kernel(value: np.ndarray) -> np.ndarray:
    return value.reshape(*value.shape, 1, 1).transpose(2, 3, 1, 0) if value.ndim == 2 else value.transpose(2, 3, 1, 0)


# (Keras weight, timm tensor, conversion) per layer type; the first type the layer is an instance of.
_PARTS = (
    (keras.layers.BatchNormalization, (("gamma", "weight", None), ("beta", "bias", None),
                                       ("moving_mean", "running_mean", None), ("moving_variance", "running_var", None))),
    (keras.layers.DepthwiseConv2D, (("kernel", "weight", lambda v: v.transpose(2, 3, 0, 1)),)),
    (keras.layers.Conv2D, (("kernel", "weight", _conv_kernel), ("bias", "bias", None))),
    (keras.layers.Dense, (("kernel", "weight", np.transpose), ("bias", "bias", None))),
    (LayerScale, (("gamma", "gamma", None),)),
)
# Bookkeeping PyTorch's batch norm keeps and Keras' does not.
_IGNORED = ("num_batches_tracked",)


def _short_name(weight) -> str:
    return weight.path.rsplit("/", 1)[-1]


def load_timm(model: keras.Model, model_cfg, checkpoint: TimmCheckpoint) -> None:
    """Fill `model` (built from `model_cfg`, float or its quantized twin, with or without the top)
    with `checkpoint`'s tensors. The classifier is filled only when `model` has the checkpoint's
    classes; otherwise it keeps its fresh initialization.

    Every tensor must fill a weight and every weight be filled, at the same shape; otherwise
    nothing is assigned.

    Raises:
      TimmError: naming the tensor left over or missing, or whose shape differs.
    """
    from safetensors.numpy import load_file

    names = timm_layers(model_cfg)
    path = checkpoint.weights
    try:
        tensors = load_file(path)
    except Exception as error:  # SafetensorError, OSError, a dtype numpy lacks
        raise TimmError(f"{path}: cannot read it ({str(error).splitlines()[0]}); fetch the checkpoint again") from None
    present = {layer.name for layer in model.layers}
    new_head = model.output_shape[-1] != checkpoint.num_classes
    assignments, used = [], set()
    for name in TOP_LAYERS:  # a model without the top: the checkpoint's are not wanted
        if name not in present and name in names:
            used.update(key for key in tensors if key.startswith(f"{names[name]}."))
    for layer in model.layers:
        weights = [w for w in layer.weights if _short_name(w) not in quantize.STATE_WEIGHTS]
        if not weights:
            continue
        prefix = names[layer.name]
        if new_head and layer.name in HEAD_LAYERS:
            used.update(key for key in tensors if key.startswith(f"{prefix}."))
            continue
        parts = next(parts for kind, parts in _PARTS if isinstance(layer, kind))
        by_name = {_short_name(w): w for w in weights}
        for ours, theirs, convert in parts:
            if ours not in by_name:
                continue
            key = f"{prefix}.{theirs}"
            if key not in tensors:
                raise TimmError(f"{path}: no tensor {key} for our layer {layer.name}: not a {checkpoint.architecture} "
                                f"checkpoint, or a damaged one")
            value = (convert or np.asarray)(tensors[key])
            weight = by_name.pop(ours)
            if tuple(value.shape) != tuple(weight.shape):
                raise TimmError(f"{path}: tensor {key} of shape {tuple(tensors[key].shape)} does not fit our layer "
                                f"{layer.name} ({weight.path} is {tuple(weight.shape)})")
            assignments.append((weight, value))
            used.add(key)
        if by_name:
            raise TimmError(f"{path}: nothing for {', '.join(w.path for w in by_name.values())}")
    left = sorted(key for key in tensors if key not in used and key.rsplit(".", 1)[-1] not in _IGNORED)
    if left:
        more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
        raise TimmError(f"{path}: tensor {left[0]}{more} fills no layer of our {model_cfg.describe()}: not a "
                        f"{checkpoint.architecture} checkpoint, or a damaged one")
    for weight, value in assignments:
        weight.assign(value.astype(np.float32))
