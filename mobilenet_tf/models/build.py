"""Building a MobileNet by name, counting its cost, and copying weights between models by layer name."""

import functools
import math

import keras

from mobilenet_tf.models import (
    LAYOUTS,
    MINIMALISTIC,
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    STOCHASTIC_DEPTH,
    V4,
    VARIANTS,
    quantize,
)
from mobilenet_tf.models import mobilenet_v1, mobilenet_v2, mobilenet_v3, mobilenet_v4
from mobilenet_tf.models.layers import Options

_BUILDERS = {
    "mobilenet_v1": mobilenet_v1.mobilenet_v1,
    "mobilenet_v2": mobilenet_v2.mobilenet_v2,
    "mobilenet_v3_large": functools.partial(mobilenet_v3.mobilenet_v3, size="large"),
    "mobilenet_v3_small": functools.partial(mobilenet_v3.mobilenet_v3, size="small"),
    **{name: functools.partial(mobilenet_v4.mobilenet_v4, size=name.removeprefix("mobilenet_v4_")) for name in V4},
}
# Each family's mapping from our layer names to the modules of timm's build of it.
TIMM_LAYERS = {
    "mobilenet_v1": mobilenet_v1.timm_layers,
    "mobilenet_v2": mobilenet_v2.timm_layers,
    "mobilenet_v3_large": functools.partial(mobilenet_v3.timm_layers, size="large"),
    "mobilenet_v3_small": functools.partial(mobilenet_v3.timm_layers, size="small"),
    **{name: functools.partial(mobilenet_v4.timm_layers, size=name.removeprefix("mobilenet_v4_")) for name in V4},
}
# keras.applications' defaults: V1 uses Keras' BN momentum and a tiny dropout, V2 a slower
# BN momentum and no dropout, V3 the slower momentum and dropout 0.2; V4 Model Garden's block
# defaults (momentum 0.99) and its recipes' dropout 0.2.
_DEFAULT_DROPOUT = {"mobilenet_v1": 1e-3, "mobilenet_v2": 0.0, "mobilenet_v3_large": 0.2, "mobilenet_v3_small": 0.2,
                    **{name: 0.2 for name in V4}}
_DEFAULT_BN_MOMENTUM = {"mobilenet_v1": 0.99, "mobilenet_v2": 0.999, "mobilenet_v3_large": 0.999,
                        "mobilenet_v3_small": 0.999, **{name: 0.99 for name in V4}}


def build_model(
    name,
    *,
    alpha=1.0,
    image_size=224,
    num_classes=1000,
    include_top=True,
    dropout=None,
    include_preprocessing=False,
    bn_momentum=None,
    bn_epsilon=1e-3,
    weight_decay=0.0,
    channels=3,
    sync_bn=False,
    quant=None,
    minimalistic=False,
    stochastic_depth=0.0,
    layout="keras",
    depth_multiplier=1.0,
    variant="",
    mean=Options.mean,
    std=Options.std,
):
    """Builds a MobileNet whose layer names match keras.applications' (V4, which Keras does not
    have: see `mobilenet_v4`).

    Args:
      name: one of MODEL_NAMES.
      alpha: width multiplier; ALPHAS lists the ones with published ImageNet weights, but any
        positive value builds.
      image_size: an int or (height, width); each at least MIN_IMAGE_SIZE, square or not.
      num_classes: classifier size.
      include_top: if False the model returns the last feature map (no pooling).
      dropout: rate before the classifier; None means keras.applications' default
        (V1: 1e-3, V2: 0, i.e. no Dropout layer).
      include_preprocessing: if True the model takes 0-255 pixels and normalizes them inside (a
        `rescale` layer); if False it takes [-1, 1] input like keras.applications.
      bn_momentum: None means keras.applications' default (V1: 0.99, V2: 0.999).
      bn_epsilon: BatchNormalization epsilon.
      weight_decay: L2 penalty coefficient on Conv2D/Dense kernels, Model Garden convention
        (loss `weight_decay / 2 * sum(w ** 2)`); 0 adds no regularizer.
      channels: input channels.
      sync_bn: BatchNormalization(synchronized=True): statistics over the global batch of all
        replicas, so a multi-replica run normalizes as one device would.
      quant: a `quantize.QuantScheme`: build the fake-quantized twin (quantization-aware
        training), with the same layer names and weights plus the quantizers'.
      minimalistic: V3 only: keras.applications' minimalistic variant (3x3 kernels, ReLU, no
        squeeze-excite).
      stochastic_depth: V4 only: the drop rate of the last block's residual branch while
        training (growing linearly over the blocks); 0 for none.
      layout: "keras" or "timm" (LAYOUTS): whose padding and stem, head and depth rules the model
        follows where the two differ (see each builder).
      depth_multiplier: scales the stages' depth as timm does (its `mobilenetv2_110d`,
        `mobilenetv3_large_150d`); V1-V3.
      variant: one of the family's VARIANTS, or "".
      mean, std: per channel, 0-1 units: the normalization the weights expect (see
        `layers.Options`); the model's input is [-1, 1] (0-255 with `include_preprocessing`)
        whatever they are.

    Returns:
      A `keras.Model` named like keras.applications' (`mobilenet_v2_1.00_224`, or
      `mobilenet_v2_1.00_96x128` for non-square input; `mobilenet_v3_large_minimalistic_1.00_224`).
      With the top, the output is float32 probabilities under any dtype policy.

    Raises:
      ValueError: for an unknown name, an image smaller than MIN_IMAGE_SIZE, a width that is
        not positive, or an option the family does not have.
    """
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}; expected one of {MODEL_NAMES}.")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be at least {MIN_IMAGE_SIZE} in each dimension, got {image_size}."
        )
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}.")
    if minimalistic and name not in MINIMALISTIC:
        raise ValueError(f"{name} has no minimalistic variant; {', '.join(MINIMALISTIC)} do.")
    if stochastic_depth and name not in STOCHASTIC_DEPTH:
        raise ValueError(f"{name} has no stochastic depth; {', '.join(STOCHASTIC_DEPTH)} do.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if variant and variant not in VARIANTS.get(name, ()):
        raise ValueError(f"{name} has no variant {variant!r}; " +
                         ", ".join(f"{n}: {', '.join(v)}" for n, v in VARIANTS.items()) + ".")
    if depth_multiplier != 1.0 and name in STOCHASTIC_DEPTH:
        raise ValueError(f"{name} has no depth multiplier.")
    opts = Options(
        bn_momentum=_DEFAULT_BN_MOMENTUM[name] if bn_momentum is None else bn_momentum, bn_epsilon=bn_epsilon,
        sync_bn=sync_bn, weight_decay=weight_decay, quant=quant, include_preprocessing=include_preprocessing,
        padding="symmetric" if layout == "timm" else "same", mean=tuple(mean), std=tuple(std),
    )
    arch = {"layout": layout}
    if minimalistic:
        arch["minimalistic"] = True
    if stochastic_depth:
        arch["stochastic_depth"] = stochastic_depth
    if depth_multiplier != 1.0:
        arch["depth_multiplier"] = depth_multiplier
    if variant == "head":
        arch["head"] = True
    elif variant:
        arch["variant"] = variant
    size_text = f"{height}" if height == width else f"{height}x{width}"
    return _BUILDERS[name](
        alpha=alpha,
        input_shape=(height, width, channels),
        num_classes=num_classes,
        include_top=include_top,
        dropout=_DEFAULT_DROPOUT[name] if dropout is None else dropout,
        opts=opts,
        name=f"{name}{'_minimalistic' if minimalistic else ''}_{alpha:0.2f}_{size_text}",
        **arch,
    )


def timm_layers(model_cfg) -> dict[str, str]:
    """{our layer name: timm's module path} of the model `model_cfg` (a `config.ModelConfig`)
    describes, from its family's spec tables."""
    m = model_cfg
    return TIMM_LAYERS[m.name](minimalistic=m.minimalistic, depth_multiplier=m.depth_multiplier,
                               head=m.variant == "head")


def count_macs(model):
    """Multiply-accumulates of one image through the model's Conv2D, DepthwiseConv2D and Dense.

    Each such layer costs (output positions) x (kernel size): for a conv the kernel holds
    kh * kw * in_channels * out_channels weights (in_channels * multiplier for a depthwise
    conv), each used once per output position; a Dense on a vector has one position. The
    classifier is included (1000 x the pooled width: 0.26M to 1.8M MACs); only with it do all
    the papers' / TF-slim's published figures match to their rounding (569M for V1-1.0-224,
    77M for V1-0.5-160, 14M for V1-0.25-128 where we count 13.57M, 300M for V2-1.0-224, 582M
    for V2-1.4-224, 59M for V2-0.35-224; without it V1-0.5-160 and V2-0.35-224 are >1% low).
    Batch norm, activations, padding, pooling and adds are not counted, as in the papers.

    Args:
      model: a built Keras model with static spatial input size.

    Returns:
      The MAC count as an int.
    """
    counted = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    total = 0
    for layer in model.layers:
        if isinstance(layer, counted):
            positions = math.prod(layer.output.shape[1:-1])
            total += positions * math.prod(layer.kernel.shape)
    return total


def build_from_config(model_cfg, *, weight_decay=None, include_preprocessing=False, include_top=True):
    """`build_model` from a `config.ModelConfig` (num_classes already resolved).

    `weight_decay` overrides the config's L2 (the trainer passes 0 when AdamW decays weights).
    """
    m = model_cfg
    quant = quantize.QuantScheme(m.qat_freeze_bn_steps, m.qat_freeze_range_steps) if m.qat else None
    return build_model(
        m.name, alpha=m.alpha, image_size=m.image_size, num_classes=m.num_classes, include_top=include_top,
        dropout=m.dropout,
        bn_momentum=m.bn_momentum, bn_epsilon=m.bn_epsilon,
        weight_decay=m.weight_decay if weight_decay is None else weight_decay,
        include_preprocessing=include_preprocessing, sync_bn=m.sync_bn, quant=quant, minimalistic=m.minimalistic,
        stochastic_depth=m.stochastic_depth, layout=m.layout, depth_multiplier=m.depth_multiplier, variant=m.variant,
        mean=m.mean, std=m.std,
    )


def copy_weights(source, target, skip=()):
    """Copies each weight-bearing layer of `target` (but those named in `skip`) from the layer of
    the same name in `source`, weight by weight name.

    This is how keras.applications weights, checkpoints of other input sizes, the exported
    (0-255 input) twin of a trained model, and float and quantized twins fill each other in.
    Quantization state (`quantize.STATE_WEIGHTS`: activation ranges, step counters), which float
    models lack, is copied when both sides have it and otherwise left as it is.

    Raises:
      ValueError: when a layer or weight is missing from `source` or a weight's shape differs.
    """
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            weights = {_short_name(w): w for w in source.get_layer(layer.name).weights}
        except ValueError:
            if all(_short_name(w) in quantize.STATE_WEIGHTS for w in layer.weights):
                continue  # a quantizer that the float source has no counterpart for
            raise ValueError(f"{source.name} has no layer {layer.name!r} to copy weights from") from None
        for weight in layer.weights:
            name = _short_name(weight)
            if name not in weights:
                if name in quantize.STATE_WEIGHTS:
                    continue
                raise ValueError(f"layer {layer.name!r} of {source.name} has no weight {name!r}")
            value = weights[name].numpy()
            if tuple(value.shape) != tuple(weight.shape):
                raise ValueError(f"layer {layer.name!r}: weight {name} has shape {tuple(value.shape)} != "
                                 f"{tuple(weight.shape)}")
            weight.assign(value)


def _short_name(weight) -> str:
    return weight.path.rsplit("/", 1)[-1]
