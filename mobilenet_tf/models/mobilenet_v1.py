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

from mobilenet_tf.models.layers import (
    conv_bn,
    conv_with_bias,
    depthwise_conv_bn,
    head_dtype,
    image_input,
    quantized,
    regularizer,
    relu6,
)

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


def _conv_block(x, filters, *, strides, bn, kernel_regularizer, quant):
    """Full 3x3 conv + BN + ReLU6: the stem."""
    conv = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                         kernel_regularizer=kernel_regularizer, name="conv1")
    return relu6(conv_bn(x, conv, "conv1_bn", bn, quant), "conv1_relu", quant)


def _depthwise_conv_block(x, filters, *, strides, block_id, bn, kernel_regularizer, quant):
    """Depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6 (paper Fig. 3, right)."""
    x = depthwise_conv_bn(x, strides, pad_name=f"conv_pad_{block_id}", name=f"conv_dw_{block_id}",
                          bn_name=f"conv_dw_{block_id}_bn", bn=bn, quant=quant)
    x = relu6(x, f"conv_dw_{block_id}_relu", quant)
    pointwise = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_regularizer=kernel_regularizer,
                              name=f"conv_pw_{block_id}")
    return relu6(conv_bn(x, pointwise, f"conv_pw_{block_id}_bn", bn, quant), f"conv_pw_{block_id}_relu", quant)


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
    quant=None,
    name="mobilenet_v1",
):
    """Builds MobileNet V1 as a functional Keras model. Arguments are trusted and mean what they
    mean in `build_model`; `alpha` gives every layer `int(filters * alpha)` channels, as in
    keras.applications (no rounding to multiples of 8 in V1); `weight_decay` reaches the 1x1
    classifier too (see `regularizer`). Returns the `keras.Model`.
    """
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn)
    reg = regularizer(weight_decay)
    inputs, x = image_input(input_shape, include_preprocessing, quant)
    x = _conv_block(x, int(STEM_FILTERS * alpha), strides=2, bn=bn, kernel_regularizer=reg, quant=quant)
    for block_id, (filters, strides) in enumerate(BLOCKS, start=1):
        x = _depthwise_conv_block(
            x, int(filters * alpha), strides=strides, block_id=block_id, bn=bn,
            kernel_regularizer=reg, quant=quant,
        )
    if include_top:
        # The classifier is a 1x1 conv on the pooled map, not a Dense, because that is how the
        # published checkpoints store it.
        x = quantized(layers.GlobalAveragePooling2D(keepdims=True)(x), "pool_quant", quant)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        preds = layers.Conv2D(num_classes, 1, padding="same", kernel_regularizer=reg, name="conv_preds")
        x = quantized(conv_with_bias(x, preds, quant), "conv_preds_quant", quant)
        x = layers.Reshape((num_classes,), name="reshape_2")(x)
        # Mixed-precision models still return float32 probabilities.
        x = layers.Activation("softmax", dtype=head_dtype(), name="predictions")(x)
    return keras.Model(inputs, x, name=name)
