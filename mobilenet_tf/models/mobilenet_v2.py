"""MobileNet V2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381).

Layer names are those of `keras.applications.MobileNetV2`, so its weights copy over by name.
"""

import keras
from keras import layers

from mobilenet_tf.models.layers import (
    BatchNormalization,
    depthwise_conv,
    head_dtype,
    image_input,
    make_divisible,
    regularizer,
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


def _inverted_res_block(x, *, expansion, filters, stride, block_id, bn, kernel_regularizer):
    """Expand 1x1 + depthwise 3x3 + linear project 1x1, with a residual when shapes allow.

    Block 0 has expansion 1 and no expand conv; keras.applications names it `expanded_conv_`.
    """
    in_channels = x.shape[-1]
    inputs = x
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    if expansion != 1:
        x = layers.Conv2D(
            expansion * in_channels,
            1,
            padding="same",
            use_bias=False,
            kernel_regularizer=kernel_regularizer,
            name=f"{prefix}expand",
        )(x)
        x = BatchNormalization(name=f"{prefix}expand_BN", **bn)(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    x = depthwise_conv(x, stride, pad_name=f"{prefix}pad", name=f"{prefix}depthwise")
    x = BatchNormalization(name=f"{prefix}depthwise_BN", **bn)(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    # Linear bottleneck: no activation after the projection (paper section 3.2).
    x = layers.Conv2D(
        filters,
        1,
        padding="same",
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        name=f"{prefix}project",
    )(x)
    x = BatchNormalization(name=f"{prefix}project_BN", **bn)(x)
    if stride == 1 and in_channels == filters:
        x = layers.Add(name=f"{prefix}add")([inputs, x])
    return x


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
    name="mobilenet_v2",
):
    """Builds MobileNet V2 as a functional Keras model. Arguments are trusted (see build_model).

    Args:
      alpha: width multiplier; block widths are `make_divisible(int(c * alpha))`. The last conv
        keeps 1280 channels for alpha <= 1 and widens only above 1 (paper section 6.1).
      input_shape: (height, width, channels).
      num_classes: size of the classifier.
      include_top: if False, return the last feature map (`out_relu`, no pooling).
      dropout: rate before the classifier; no Dropout layer when 0.
      bn_momentum, bn_epsilon: BatchNormalization settings for every BN layer.
      weight_decay: L2 on Conv2D and Dense kernels; see `regularizer`.
      include_preprocessing: if True the model takes 0-255 pixels, else [-1, 1].
      sync_bn: batch statistics over the global batch under a distribution strategy.
      name: model name.

    Returns:
      A `keras.Model`; with the top, its output is float32 softmax probabilities
      [batch, num_classes] whatever the dtype policy.
    """
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn)
    reg = regularizer(weight_decay)
    inputs, x = image_input(input_shape, include_preprocessing)
    x = layers.Conv2D(
        make_divisible(STEM_FILTERS * alpha),
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        name="Conv1",
    )(x)
    x = BatchNormalization(name="bn_Conv1", **bn)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
        x = _inverted_res_block(
            x, expansion=expansion, filters=make_divisible(int(filters * alpha)),
            stride=stride, block_id=block_id, bn=bn, kernel_regularizer=reg,
        )
    last_filters = make_divisible(LAST_FILTERS * alpha) if alpha > 1.0 else LAST_FILTERS
    x = layers.Conv2D(last_filters, 1, use_bias=False, kernel_regularizer=reg, name="Conv_1")(x)
    x = BatchNormalization(name="Conv_1_bn", **bn)(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        # Mixed-precision models still return float32 probabilities; the kernel is float32
        # under float32 and mixed policies alike, so weights still copy by name.
        x = layers.Dense(
            num_classes, activation="softmax", kernel_regularizer=reg, dtype=head_dtype(),
            name="predictions",
        )(x)
    return keras.Model(inputs, x, name=name)
