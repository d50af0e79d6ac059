"""MobileNet V3 Large and Small (Howard et al. 2019, https://arxiv.org/abs/1905.02244).

Layer names are those of `keras.applications.MobileNetV3Large/Small` (Keras 3.15), so its ImageNet
weights copy over by name; its activations are unnamed, ours are named after their block so that
the quantized twin's quantizers are too. The minimalistic variant (3x3 kernels, ReLU, no
squeeze-excite) is keras.applications' `minimalistic=True`.
"""

import keras
from keras import layers

from mobilenet_tf.models import quantize
from mobilenet_tf.models.layers import (
    activation,
    conv_bn,
    conv_with_bias,
    depthwise_conv_bn,
    head_dtype,
    image_input,
    make_divisible,
    project,
    quantized,
    regularizer,
)

RE, HS = "relu", "hard_swish"
# The paper's Table 1 (Large) and Table 2 (Small), one row per bottleneck, as (kernel, expansion,
# output channels, squeeze-excite, activation, stride). The expansion is keras.applications':
# the paper's "exp size" over the block's input channels (72 / 16 ...), rounded to a multiple of 8
# after the width multiplier, so widened or thinned models keep keras.applications' shapes.
LARGE = (
    (3, 1, 16, False, RE, 1),
    (3, 4, 24, False, RE, 2),
    (3, 3, 24, False, RE, 1),
    (5, 3, 40, True, RE, 2),
    (5, 3, 40, True, RE, 1),
    (5, 3, 40, True, RE, 1),
    (3, 6, 80, False, HS, 2),
    (3, 2.5, 80, False, HS, 1),
    (3, 2.3, 80, False, HS, 1),
    (3, 2.3, 80, False, HS, 1),
    (3, 6, 112, True, HS, 1),
    (3, 6, 112, True, HS, 1),
    (5, 6, 160, True, HS, 2),
    (5, 6, 160, True, HS, 1),
    (5, 6, 160, True, HS, 1),
)
SMALL = (
    (3, 1, 16, True, RE, 2),
    (3, 72 / 16, 24, False, RE, 2),
    (3, 88 / 24, 24, False, RE, 1),
    (5, 4, 40, True, HS, 2),
    (5, 6, 40, True, HS, 1),
    (5, 6, 40, True, HS, 1),
    (5, 3, 48, True, HS, 1),
    (5, 3, 48, True, HS, 1),
    (5, 6, 96, True, HS, 2),
    (5, 6, 96, True, HS, 1),
    (5, 6, 96, True, HS, 1),
)
# Channels of the 1x1 conv after the pooling (`conv_2`); widened above alpha 1 only.
LAST_POINT = {"large": 1280, "small": 1024}
STEM_FILTERS = 16
SE_RATIO = 0.25


def minimal(block):
    """A block of the minimalistic variant: 3x3 kernels, ReLU, no squeeze-excite (the rows whose
    kernel, activation or squeeze-excite keras.applications takes from the variant)."""
    kernel, expansion, filters, _, act, stride = block
    return 3, expansion, filters, False, RE, stride


def _squeeze_excite(x, filters, prefix, kernel_regularizer, quant):
    """Global pooling, 1x1 conv to a quarter of the channels (ReLU), 1x1 conv back (hard-sigmoid),
    and the input scaled channel by channel (paper section 5.3)."""
    s = quantized(layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")(x),
                  f"{prefix}squeeze_excite_avg_pool_quant", quant)
    reduce = layers.Conv2D(make_divisible(filters * SE_RATIO), 1, padding="same",
                           kernel_regularizer=kernel_regularizer, name=f"{prefix}squeeze_excite_conv")
    s = activation(conv_with_bias(s, reduce, quant), RE, f"{prefix}squeeze_excite_relu", quant)
    expand = layers.Conv2D(filters, 1, padding="same", kernel_regularizer=kernel_regularizer,
                           name=f"{prefix}squeeze_excite_conv_1")
    s = quantized(conv_with_bias(s, expand, quant), f"{prefix}squeeze_excite_conv_1_quant", quant)
    # relu6(x + 3) / 6, as keras.applications computes it; in the twin, as TFLite's int8 ops do.
    name = f"{prefix}squeeze_excite_hard_sigmoid"
    s = (layers.Activation("hard_sigmoid", name=name) if quant is None else quantize.QuantHardSigmoid(name=name))(s)
    return quantized(layers.Multiply(name=f"{prefix}squeeze_excite_mul")([x, s]),
                     f"{prefix}squeeze_excite_mul_quant", quant)


def _inverted_res_block(x, *, kernel, expansion, filters, se, act, stride, block_id, bn, kernel_regularizer,
                        quant):
    """Expand 1x1 + depthwise kxk + (squeeze-excite) + linear project 1x1, with a residual when
    shapes allow. Block 0 has no expand conv; keras.applications names it `expanded_conv_`."""
    in_channels = x.shape[-1]
    inputs = x
    prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
    expanded = make_divisible(in_channels * expansion)
    if block_id:
        expand = layers.Conv2D(expanded, 1, padding="same", use_bias=False, kernel_regularizer=kernel_regularizer,
                               name=f"{prefix}expand")
        x = activation(conv_bn(x, expand, f"{prefix}expand_bn", bn, quant), act, f"{prefix}expand_{act}", quant)
    x = depthwise_conv_bn(x, stride, pad_name=f"{prefix}depthwise_pad", name=f"{prefix}depthwise",
                          bn_name=f"{prefix}depthwise_bn", bn=bn, quant=quant, kernel=kernel)
    x = activation(x, act, f"{prefix}depthwise_{act}", quant)
    if se:
        x = _squeeze_excite(x, expanded, prefix, kernel_regularizer, quant)
    return project(x, inputs, filters=filters, stride=stride, prefix=prefix, bn_name=f"{prefix}project_bn", bn=bn,
                   kernel_regularizer=kernel_regularizer, quant=quant)


def mobilenet_v3(
    *,
    size,
    minimalistic=False,
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
    name="mobilenet_v3",
):
    """Builds MobileNet V3 `size` ("large" or "small") as a functional Keras model. Arguments are
    trusted and mean what they mean in `build_model`; `alpha` gives block widths
    `make_divisible(c * alpha)`; the last 1x1 conv has 6x the last block's channels, and `conv_2`
    (after the pooling, with a bias and no batch norm) keeps 1280 (Large) or 1024 (Small)
    channels for alpha <= 1. Without the top the output is the last feature map (after `conv_1`'s
    activation). Returns the `keras.Model`.
    """
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn)
    reg = regularizer(weight_decay)
    blocks = LARGE if size == "large" else SMALL
    if minimalistic:
        blocks = tuple(map(minimal, blocks))
    act = RE if minimalistic else HS
    inputs, x = image_input(input_shape, include_preprocessing, quant)
    stem = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, kernel_regularizer=reg,
                         name="conv")
    x = activation(conv_bn(x, stem, "conv_bn", bn, quant), act, f"conv_{act}", quant)
    for block_id, (kernel, expansion, filters, se, block_act, stride) in enumerate(blocks):
        x = _inverted_res_block(
            x, kernel=kernel, expansion=expansion, filters=make_divisible(filters * alpha), se=se, act=block_act,
            stride=stride, block_id=block_id, bn=bn, kernel_regularizer=reg, quant=quant,
        )
    last = layers.Conv2D(make_divisible(x.shape[-1] * 6), 1, padding="same", use_bias=False, kernel_regularizer=reg,
                         name="conv_1")
    x = activation(conv_bn(x, last, "conv_1_bn", bn, quant), act, f"conv_1_{act}", quant)
    if include_top:
        x = quantized(layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x), "avg_pool_quant", quant)
        last_point = LAST_POINT[size]
        head = layers.Conv2D(make_divisible(last_point * alpha) if alpha > 1.0 else last_point, 1, padding="same",
                             kernel_regularizer=reg, name="conv_2")
        x = activation(conv_with_bias(x, head, quant), act, f"conv_2_{act}", quant)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        logits = layers.Conv2D(num_classes, 1, padding="same", kernel_regularizer=reg, name="logits")
        x = quantized(conv_with_bias(x, logits, quant), "logits_quant", quant)
        x = layers.Flatten(name="flatten")(x)
        # Mixed-precision models still return float32 probabilities.
        x = layers.Activation("softmax", dtype=head_dtype(), name="predictions")(x)
    return keras.Model(inputs, x, name=name)
