"""MobileNet V1 (Howard et al. 2017, https://arxiv.org/abs/1704.04861).

Layer names are those of `keras.applications.MobileNet`, so its weights copy over by name.

One deliberate difference: keras.applications pads every stride-2 depthwise conv by
((0, 1), (0, 1)), which floors odd sizes (33x47 ends at 1x1). We pad with `correct_pad`, as its
own V2 does, which gives TensorFlow 'SAME' output sizes (33x47 ends at 2x2) like the TF-slim
original. Whenever each stride-2 input is even (any size divisible by 32, e.g. 224) the two are
identical.
"""

import keras
from keras import layers

from mobilenet_tf.models.layers import BatchNormalization, depthwise_conv, head_dtype, image_input, regularizer

# The 13 depthwise-separable blocks of the paper's Table 1, as (pointwise filters, stride);
# block ids start at 1 as in keras.applications.
BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_FILTERS = 32


def _conv_block(x, filters, *, strides, bn, kernel_regularizer):
    """Full 3x3 conv + BN + ReLU6: the stem."""
    x = layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        name="conv1",
    )(x)
    x = BatchNormalization(name="conv1_bn", **bn)(x)
    return layers.ReLU(6.0, name="conv1_relu")(x)


def _depthwise_conv_block(x, filters, *, strides, block_id, bn, kernel_regularizer):
    """Depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6 (paper Fig. 3, right)."""
    x = depthwise_conv(x, strides, pad_name=f"conv_pad_{block_id}", name=f"conv_dw_{block_id}")
    x = BatchNormalization(name=f"conv_dw_{block_id}_bn", **bn)(x)
    x = layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(x)
    x = layers.Conv2D(
        filters,
        1,
        padding="same",
        use_bias=False,
        kernel_regularizer=kernel_regularizer,
        name=f"conv_pw_{block_id}",
    )(x)
    x = BatchNormalization(name=f"conv_pw_{block_id}_bn", **bn)(x)
    return layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


def mobilenet_v1(
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
    name="mobilenet_v1",
):
    """Builds MobileNet V1 as a functional Keras model. Arguments are trusted (see build_model).

    Args:
      alpha: width multiplier; every layer has `int(filters * alpha)` channels, as in
        keras.applications (no rounding to multiples of 8 in V1).
      input_shape: (height, width, channels).
      num_classes: size of the classifier.
      include_top: if False, return the last feature map (no pooling).
      dropout: rate before the classifier; no Dropout layer when 0.
      bn_momentum, bn_epsilon: BatchNormalization settings for every BN layer.
      weight_decay: L2 on Conv2D kernels, including the 1x1 classifier; see `regularizer`.
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
    x = _conv_block(x, int(STEM_FILTERS * alpha), strides=2, bn=bn, kernel_regularizer=reg)
    for block_id, (filters, strides) in enumerate(BLOCKS, start=1):
        x = _depthwise_conv_block(
            x, int(filters * alpha), strides=strides, block_id=block_id, bn=bn,
            kernel_regularizer=reg,
        )
    if include_top:
        # The classifier is a 1x1 conv on the pooled map, not a Dense, because that is how the
        # published checkpoints store it.
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(
            num_classes, 1, padding="same", kernel_regularizer=reg, name="conv_preds"
        )(x)
        x = layers.Reshape((num_classes,), name="reshape_2")(x)
        # Mixed-precision models still return float32 probabilities.
        x = layers.Activation("softmax", dtype=head_dtype(), name="predictions")(x)
    return keras.Model(inputs, x, name=name)
