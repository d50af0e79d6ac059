"""MobileNet V2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381).

Layer names are those of `keras.applications.MobileNetV2`, so its weights copy over by name.

timm's MobileNet V2 (`mobilenetv2_035` to `_140`) is this network with symmetric padding (its
layout); its deeper `mobilenetv2_110d` and `_120d` scale the middle stages' depth (1.2x, 1.4x)
and keep the first and last stage, the stem and the last conv at their 1.0 sizes, which a depth
multiplier does here too.
"""

import collections

import keras
from keras import layers

from mobilenet_tf.models.layers import (
    Options,
    classifier,
    conv_bn,
    depthwise_conv_bn,
    image_input,
    make_divisible,
    padded,
    project,
    quantized,
    relu6,
)
from mobilenet_tf.models.stages import place, timm_names

Row = collections.namedtuple("Row", "expansion filters stride")
# The paper's Table 2, a stage per line: (repeats n, (expansion t, output channels c, first stride s)).
STAGES = (
    ((1, Row(1, 16, 1)),),
    ((2, Row(6, 24, 2)),),
    ((3, Row(6, 32, 2)),),
    ((4, Row(6, 64, 2)),),
    ((3, Row(6, 96, 1)),),
    ((3, Row(6, 160, 2)),),
    ((1, Row(6, 320, 1)),),
)
STEM_FILTERS = 32
LAST_FILTERS = 1280


def blocks(depth_multiplier=1.0):
    """The placed blocks (see `stages.place`): with a depth multiplier the first and last stage
    keep their one block, as timm's `_110d`/`_120d`."""
    return place(STAGES, depth_multiplier, fixed_stages=(0, len(STAGES) - 1))


def _prefix(block_id):
    return f"block_{block_id}_" if block_id else "expanded_conv_"


def _inverted_res_block(x, *, expansion, filters, stride, block_id, opts):
    """Expand 1x1 + depthwise 3x3 + linear project 1x1, with a residual when shapes allow.

    Block 0 has expansion 1 and no expand conv; keras.applications names it `expanded_conv_`.
    """
    in_channels = x.shape[-1]
    inputs = x
    prefix = _prefix(block_id)
    if expansion != 1:
        expand = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                               kernel_regularizer=opts.reg, name=f"{prefix}expand")
        x = conv_bn(x, expand, f"{prefix}expand_BN", opts)
        x = relu6(x, f"{prefix}expand_relu", opts)
    x = depthwise_conv_bn(x, stride, pad_name=f"{prefix}pad", name=f"{prefix}depthwise",
                          bn_name=f"{prefix}depthwise_BN", opts=opts)
    x = relu6(x, f"{prefix}depthwise_relu", opts)
    return project(x, inputs, filters=filters, stride=stride, prefix=prefix, bn_name=f"{prefix}project_BN", opts=opts)


def mobilenet_v2(
    *,
    alpha,
    input_shape,
    num_classes,
    include_top,
    dropout,
    opts: Options,
    depth_multiplier=1.0,
    name="mobilenet_v2",
    **_,
):
    """Builds MobileNet V2 as a functional Keras model. Arguments are trusted and mean what they
    mean in `build_model`; `alpha` gives block widths `make_divisible(int(c * alpha))`, and the
    last conv keeps 1280 channels for alpha <= 1, widening only above 1 (paper section 6.1);
    `depth_multiplier` (timm's deeper variants) keeps the stem and that last conv at 32 and 1280.
    Without the top the output is the last feature map `out_relu`. Returns the `keras.Model`.
    """
    deeper = depth_multiplier != 1.0
    inputs, x = image_input(input_shape, opts)
    x, padding = padded(x, 3, 2, opts, "Conv1_pad")
    stem = layers.Conv2D(STEM_FILTERS if deeper else make_divisible(STEM_FILTERS * alpha), 3, strides=2,
                         padding=padding, use_bias=False, kernel_regularizer=opts.reg, name="Conv1")
    x = relu6(conv_bn(x, stem, "bn_Conv1", opts), "Conv1_relu", opts)
    for block in blocks(depth_multiplier):
        expansion, filters, stride = block.row
        x = _inverted_res_block(x, expansion=expansion, filters=make_divisible(int(filters * alpha)), stride=stride,
                                block_id=block.position, opts=opts)
    last_filters = make_divisible(LAST_FILTERS * alpha) if alpha > 1.0 and not deeper else LAST_FILTERS
    last = layers.Conv2D(last_filters, 1, use_bias=False, kernel_regularizer=opts.reg, name="Conv_1")
    x = relu6(conv_bn(x, last, "Conv_1_bn", opts), "out_relu", opts)
    if include_top:
        x = quantized(layers.GlobalAveragePooling2D()(x), "pool_quant", opts)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = classifier(x, num_classes, opts)
    return keras.Model(inputs, x, name=name)


def timm_layers(*, depth_multiplier=1.0, **_) -> dict[str, str]:
    """{our layer: timm's module} of timm's MobileNet V2 (its EfficientNet class: a 'ds' block,
    then 'ir' blocks)."""

    def parts(block):
        p = _prefix(block.position)
        if block.row.expansion == 1:
            return {f"{p}depthwise": "conv_dw", f"{p}depthwise_BN": "bn1", f"{p}project": "conv_pw",
                    f"{p}project_BN": "bn2"}
        return {f"{p}expand": "conv_pw", f"{p}expand_BN": "bn1", f"{p}depthwise": "conv_dw", f"{p}depthwise_BN": "bn2",
                f"{p}project": "conv_pwl", f"{p}project_BN": "bn3"}

    return {**timm_names(blocks(depth_multiplier), parts), "Conv1": "conv_stem", "bn_Conv1": "bn1",
            "Conv_1": "conv_head", "Conv_1_bn": "bn2", "predictions": "classifier"}
