"""MobileNet V3 Large and Small (Howard et al. 2019, https://arxiv.org/abs/1905.02244).

Layer names are those of `keras.applications.MobileNetV3Large/Small` (Keras 3.15), so its ImageNet
weights copy over by name; its activations are unnamed, ours are named after their block so that
the quantized twin's quantizers are too. The minimalistic variant (3x3 kernels, ReLU, no
squeeze-excite) is keras.applications' `minimalistic=True`.

timm's MobileNet V3 is this network with its layout (`layout="timm"`): symmetric padding, the stem
widened from 0.75 on, the last 1x1 conv at 960 or 576 times the width, the conv after the pooling
at 1280 or 1024 whatever the width, and a depth multiplier (`mobilenetv3_large_150d`). timm's
`tf_mobilenetv3_*` are TF-slim's weights, keras.applications' network. Its `mobilenetv3_rw`
(`variant="rw"`, V3-Large) differs in four details: no residual around the first block,
squeeze-excite reduced to `round(channels / 4)` with the block's own activation, and no bias in
the conv after the pooling.
"""

import collections

import keras
from keras import layers

from mobilenet_tf.models import quantize
from mobilenet_tf.models.layers import (
    Options,
    activation,
    conv_bn,
    conv_with_bias,
    depthwise_conv_bn,
    head_dtype,
    image_input,
    make_divisible,
    padded,
    project,
    quantized,
)
from mobilenet_tf.models.stages import place, scale_repeats, timm_names

RE, HS = "relu", "hard_swish"
Row = collections.namedtuple("Row", "kernel expansion filters se act stride")
# The paper's Table 1 (Large) and Table 2 (Small) in timm's stages: (repeats, (kernel, expansion,
# output channels, squeeze-excite, activation, stride)). The expansion is keras.applications':
# the paper's "exp size" over the block's input channels (72 / 16 ...), rounded to a multiple of 8
# after the width multiplier, so widened or thinned models keep keras.applications' shapes.
LARGE = (
    ((1, Row(3, 1, 16, False, RE, 1)),),
    ((1, Row(3, 4, 24, False, RE, 2)), (1, Row(3, 3, 24, False, RE, 1))),
    ((3, Row(5, 3, 40, True, RE, 2)),),
    ((1, Row(3, 6, 80, False, HS, 2)), (1, Row(3, 2.5, 80, False, HS, 1)), (2, Row(3, 2.3, 80, False, HS, 1))),
    ((2, Row(3, 6, 112, True, HS, 1)),),
    ((3, Row(5, 6, 160, True, HS, 2)),),
)
SMALL = (
    ((1, Row(3, 1, 16, True, RE, 2)),),
    ((1, Row(3, 72 / 16, 24, False, RE, 2)), (1, Row(3, 88 / 24, 24, False, RE, 1))),
    ((1, Row(5, 4, 40, True, HS, 2)), (2, Row(5, 6, 40, True, HS, 1))),
    ((2, Row(5, 3, 48, True, HS, 1)),),
    ((3, Row(5, 6, 96, True, HS, 2)),),
)
# The 1x1 conv after the last block (timm's last stage): 6x that block's channels.
LAST_CONV = {"large": 960, "small": 576}
# Channels of the 1x1 conv after the pooling (`conv_2`); widened above alpha 1 only (keras.applications).
LAST_POINT = {"large": 1280, "small": 1024}
STEM_FILTERS = 16
SE_RATIO = 0.25


def minimal(row):
    """A block of the minimalistic variant: 3x3 kernels, ReLU, no squeeze-excite (the rows whose
    kernel, activation or squeeze-excite keras.applications takes from the variant)."""
    return row._replace(kernel=3, se=False, act=RE)


def blocks(size, minimalistic=False, depth_multiplier=1.0):
    """The placed blocks (see `stages.place`) of V3 `size`."""
    table = LARGE if size == "large" else SMALL
    if minimalistic:
        table = tuple(tuple((n, minimal(row)) for n, row in stage) for stage in table)
    return place(table, depth_multiplier)


def last_convs(depth_multiplier=1.0):
    """The names of the 1x1 convs after the last block: `conv_1`, and `conv_1_1`... when a depth
    multiplier deepens that stage too (timm's `mobilenetv3_large_150d` has two)."""
    return ["conv_1" if i == 0 else f"conv_1_{i}" for i in range(scale_repeats([1], depth_multiplier)[0])]


def _prefix(block_id):
    return f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"


def _squeeze_excite(x, filters, prefix, opts, rw=False, act=RE):
    """Global pooling, 1x1 conv to a quarter of the channels (ReLU), 1x1 conv back (hard-sigmoid),
    and the input scaled channel by channel (paper section 5.3). timm's `mobilenetv3_rw` (`rw`)
    rounds the quarter to the nearest integer and activates it with the block's `act`."""
    s = quantized(layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")(x),
                  f"{prefix}squeeze_excite_avg_pool_quant", opts)
    reduced = round(filters * SE_RATIO) if rw else make_divisible(filters * SE_RATIO)
    reduce = layers.Conv2D(reduced, 1, padding="same", kernel_regularizer=opts.reg,
                           name=f"{prefix}squeeze_excite_conv")
    act = act if rw else RE
    s = activation(conv_with_bias(s, reduce, opts), act, f"{prefix}squeeze_excite_{act}", opts)
    expand = layers.Conv2D(filters, 1, padding="same", kernel_regularizer=opts.reg,
                           name=f"{prefix}squeeze_excite_conv_1")
    s = quantized(conv_with_bias(s, expand, opts), f"{prefix}squeeze_excite_conv_1_quant", opts)
    # relu6(x + 3) / 6, as keras.applications computes it; in the twin, as TFLite's int8 ops do.
    name = f"{prefix}squeeze_excite_hard_sigmoid"
    s = (layers.Activation("hard_sigmoid", name=name) if opts.quant is None else quantize.QuantHardSigmoid(name=name))(s)
    return quantized(layers.Multiply(name=f"{prefix}squeeze_excite_mul")([x, s]),
                     f"{prefix}squeeze_excite_mul_quant", opts)


def _inverted_res_block(x, row, *, filters, block_id, opts, rw=False):
    """Expand 1x1 + depthwise kxk + (squeeze-excite) + linear project 1x1, with a residual when
    shapes allow. A block of expansion 1 has no expand conv (block 0, which keras.applications
    names `expanded_conv_`, and its repeats in a deeper model)."""
    in_channels = x.shape[-1]
    inputs = x
    prefix = _prefix(block_id)
    expanded = make_divisible(in_channels * row.expansion)
    if row.expansion != 1:
        expand = layers.Conv2D(expanded, 1, padding="same", use_bias=False, kernel_regularizer=opts.reg,
                               name=f"{prefix}expand")
        x = activation(conv_bn(x, expand, f"{prefix}expand_bn", opts), row.act, f"{prefix}expand_{row.act}", opts)
    x = depthwise_conv_bn(x, row.stride, pad_name=f"{prefix}depthwise_pad", name=f"{prefix}depthwise",
                          bn_name=f"{prefix}depthwise_bn", opts=opts, kernel=row.kernel)
    x = activation(x, row.act, f"{prefix}depthwise_{row.act}", opts)
    if row.se:
        x = _squeeze_excite(x, expanded, prefix, opts, rw=rw, act=row.act)
    return project(x, inputs, filters=filters, stride=row.stride, prefix=prefix, bn_name=f"{prefix}project_bn",
                   opts=opts, skip=not (rw and block_id == 0))


def mobilenet_v3(
    *,
    size,
    minimalistic=False,
    alpha,
    input_shape,
    num_classes,
    include_top,
    dropout,
    opts: Options,
    layout="keras",
    depth_multiplier=1.0,
    variant="",
    name="mobilenet_v3",
):
    """Builds MobileNet V3 `size` ("large" or "small") as a functional Keras model. Arguments are
    trusted and mean what they mean in `build_model`; `alpha` gives block widths
    `make_divisible(c * alpha)`; the last 1x1 conv has 6x the last block's channels, and `conv_2`
    (after the pooling, with a bias and no batch norm) keeps 1280 (Large) or 1024 (Small)
    channels for alpha <= 1. timm's layout and `variant="rw"`: see the module docstring. Without
    the top the output is the last feature map (after `conv_1`'s activation). Returns the
    `keras.Model`.
    """
    timm = layout == "timm"
    rw = variant == "rw"
    act = RE if minimalistic else HS
    inputs, x = image_input(input_shape, opts)
    x, padding = padded(x, 3, 2, opts, "conv_pad")
    stem_filters = make_divisible(STEM_FILTERS * alpha) if timm and alpha >= 0.75 else STEM_FILTERS
    stem = layers.Conv2D(stem_filters, 3, strides=2, padding=padding, use_bias=False, kernel_regularizer=opts.reg,
                         name="conv")
    x = activation(conv_bn(x, stem, "conv_bn", opts), act, f"conv_{act}", opts)
    for block in blocks(size, minimalistic, depth_multiplier):
        x = _inverted_res_block(x, block.row, filters=make_divisible(block.row.filters * alpha),
                                block_id=block.position, opts=opts, rw=rw)
    last_conv = make_divisible(LAST_CONV[size] * alpha) if timm else make_divisible(x.shape[-1] * 6)
    for name_ in last_convs(depth_multiplier):
        last = layers.Conv2D(last_conv, 1, padding="same", use_bias=False, kernel_regularizer=opts.reg, name=name_)
        x = activation(conv_bn(x, last, f"{name_}_bn", opts), act, f"{name_}_{act}", opts)
    if include_top:
        x = quantized(layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x), "avg_pool_quant", opts)
        last_point = LAST_POINT[size]
        head = layers.Conv2D(make_divisible(last_point * alpha) if alpha > 1.0 and not timm else last_point, 1,
                             padding="same", use_bias=not rw, kernel_regularizer=opts.reg, name="conv_2")
        x = activation(conv_with_bias(x, head, opts), act, f"conv_2_{act}", opts)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        logits = layers.Conv2D(num_classes, 1, padding="same", kernel_regularizer=opts.reg, name="logits")
        x = quantized(conv_with_bias(x, logits, opts), "logits_quant", opts)
        x = layers.Flatten(name="flatten")(x)
        # Mixed-precision models still return float32 probabilities.
        x = layers.Activation("softmax", dtype=head_dtype(), name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def timm_layers(*, size, minimalistic=False, depth_multiplier=1.0, **_) -> dict[str, str]:
    """{our layer: timm's module} of timm's MobileNet V3 (its MobileNetV3 class: a 'ds' block, 'ir'
    blocks, a 'cn' stage for `conv_1`)."""

    def parts(block):
        p = _prefix(block.position)
        if block.row.expansion == 1:  # timm's 'ds' block
            names = {f"{p}depthwise": "conv_dw", f"{p}depthwise_bn": "bn1", f"{p}project": "conv_pw",
                     f"{p}project_bn": "bn2"}
        else:
            names = {f"{p}expand": "conv_pw", f"{p}expand_bn": "bn1", f"{p}depthwise": "conv_dw",
                     f"{p}depthwise_bn": "bn2", f"{p}project": "conv_pwl", f"{p}project_bn": "bn3"}
        if block.row.se:
            names.update({f"{p}squeeze_excite_conv": "se.conv_reduce", f"{p}squeeze_excite_conv_1": "se.conv_expand"})
        return names

    placed = blocks(size, minimalistic, depth_multiplier)
    last = placed[-1].stage + 1
    names = {**timm_names(placed, parts), "conv": "conv_stem", "conv_bn": "bn1", "conv_2": "conv_head",
             "logits": "classifier"}
    for i, name in enumerate(last_convs(depth_multiplier)):
        names.update({name: f"blocks.{last}.{i}.conv", f"{name}_bn": f"blocks.{last}.{i}.bn1"})
    return names
