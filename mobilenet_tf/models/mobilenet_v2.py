"""MobileNet V2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381).

Layer names are those of `keras.applications.MobileNetV2`, so its weights copy over by name.
"""

import keras
from keras import layers

from mobilenet_tf.models.layers import (
    classifier,
    conv_bn,
    depthwise_conv_bn,
    image_input,
    make_divisible,
    project,
    quantized,
    regularizer,
    relu6,
)

# The paper's Table 2 as (expansion t, output channels c, repeats n, first stride s).
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# One (expansion, channels, stride) row per inverted residual block, 17 in all; only the first
# block of a stage strides.
BLOCKS = tuple(
    (t, c, s if i == 0 else 1) for t, c, n, s in STAGES for i in range(n)
)
STEM_FILTERS = 32
LAST_FILTERS = 1280


def _inverted_res_block(x, *, expansion, filters, stride, block_id, bn, kernel_regularizer, quant):
    """Expand 1x1 + depthwise 3x3 + linear project 1x1, with a residual when shapes allow.

    Block 0 has expansion 1 and no expand conv; keras.applications names it `expanded_conv_`.
    """
    in_channels = x.shape[-1]
    inputs = x
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    if expansion != 1:
        expand = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                               kernel_regularizer=kernel_regularizer, name=f"{prefix}expand")
        x = conv_bn(x, expand, f"{prefix}expand_BN", bn, quant)
        x = relu6(x, f"{prefix}expand_relu", quant)
    x = depthwise_conv_bn(x, stride, pad_name=f"{prefix}pad", name=f"{prefix}depthwise",
                          bn_name=f"{prefix}depthwise_BN", bn=bn, quant=quant)
    x = relu6(x, f"{prefix}depthwise_relu", quant)
    return project(x, inputs, filters=filters, stride=stride, prefix=prefix, bn_name=f"{prefix}project_BN", bn=bn,
                   kernel_regularizer=kernel_regularizer, quant=quant)


def mobilenet_v2(
    *,
    alpha,
    input_shape,
    num_classes,
    include_top,
    dropout,
    bn_momentum,
    bn_epsilon,
    weight_decay,
    include_preprocessing=False,
    sync_bn=False,
    quant=None,
    name="mobilenet_v2",
):
    """Builds MobileNet V2 as a functional Keras model. Arguments are trusted and mean what they
    mean in `build_model`; `alpha` gives block widths `make_divisible(int(c * alpha))`, and the
    last conv keeps 1280 channels for alpha <= 1, widening only above 1 (paper section 6.1);
    without the top the output is the last feature map `out_relu`. Returns the `keras.Model`.
    """
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn)
    reg = regularizer(weight_decay)
    inputs, x = image_input(input_shape, include_preprocessing, quant)
    stem = layers.Conv2D(make_divisible(STEM_FILTERS * alpha), 3, strides=2, padding="same", use_bias=False,
                         kernel_regularizer=reg, name="Conv1")
    x = relu6(conv_bn(x, stem, "bn_Conv1", bn, quant), "Conv1_relu", quant)
    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
        x = _inverted_res_block(
            x, expansion=expansion, filters=make_divisible(int(filters * alpha)),
            stride=stride, block_id=block_id, bn=bn, kernel_regularizer=reg, quant=quant,
        )
    last_filters = make_divisible(LAST_FILTERS * alpha) if alpha > 1.0 else LAST_FILTERS
    last = layers.Conv2D(last_filters, 1, use_bias=False, kernel_regularizer=reg, name="Conv_1")
    x = relu6(conv_bn(x, last, "Conv_1_bn", bn, quant), "out_relu", quant)
    if include_top:
        x = quantized(layers.GlobalAveragePooling2D()(x), "pool_quant", quant)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = classifier(x, num_classes, reg, quant)
    return keras.Model(inputs, x, name=name)
