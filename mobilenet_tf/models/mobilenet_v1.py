"""MobileNet V1 (Howard et al. 2017, https://arxiv.org/abs/1704.04861).

Layer names are those of `keras.applications.MobileNet`, so its weights copy over by name.

One deliberate difference: keras.applications pads every stride-2 depthwise conv by
((0, 1), (0, 1)), which floors odd sizes (33x47 ends at 1x1). We pad with `correct_pad`, as its
own V2 does, which gives TensorFlow 'SAME' output sizes (33x47 ends at 2x2) like the TF-slim
original. Whenever each stride-2 input is even (any size divisible by 32, e.g. 224) the two are
identical.

timm's MobileNet V1 (`mobilenetv1_100`, `_125`, and `_100h` with a 1x1 conv before the pooling:
`head=True`) is this network with timm's layout: symmetric padding and channels rounded to
multiples of 8 (the same widths at 1.0 and 1.25).
"""

import collections

import keras
from keras import layers

from mobilenet_tf.models.layers import (
    Options,
    conv_bn,
    conv_with_bias,
    depthwise_conv_bn,
    head_dtype,
    image_input,
    make_divisible,
    padded,
    quantized,
    relu6,
)
from mobilenet_tf.models.stages import place, timm_names

Row = collections.namedtuple("Row", "filters stride")
# The 13 depthwise-separable blocks of the paper's Table 1 in timm's five stages: (repeats,
# (pointwise filters, stride)); block ids start at 1 as in keras.applications.
STAGES = (
    ((1, Row(64, 1)),),
    ((2, Row(128, 2)),),
    ((2, Row(256, 2)),),
    ((6, Row(512, 2)),),
    ((2, Row(1024, 2)),),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1024  # timm's mobilenetv1_100h: a 1x1 conv of at least this width before the pooling


def _width(filters, alpha, layout):
    """keras.applications' `int(filters * alpha)`, or timm's rounding to a multiple of 8."""
    return make_divisible(filters * alpha) if layout == "timm" else int(filters * alpha)


def _depthwise_conv_block(x, filters, *, strides, block_id, opts):
    """Depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6 (paper Fig. 3, right)."""
    x = depthwise_conv_bn(x, strides, pad_name=f"conv_pad_{block_id}", name=f"conv_dw_{block_id}",
                          bn_name=f"conv_dw_{block_id}_bn", opts=opts)
    x = relu6(x, f"conv_dw_{block_id}_relu", opts)
    pointwise = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_regularizer=opts.reg,
                              name=f"conv_pw_{block_id}")
    return relu6(conv_bn(x, pointwise, f"conv_pw_{block_id}_bn", opts), f"conv_pw_{block_id}_relu", opts)


def mobilenet_v1(
    *,
    alpha,
    input_shape,
    num_classes,
    include_top,
    dropout,
    opts: Options,
    layout="keras",
    depth_multiplier=1.0,
    head=False,
    name="mobilenet_v1",
):
    """Builds MobileNet V1 as a functional Keras model. Arguments are trusted and mean what they
    mean in `build_model`; `alpha` gives every layer `int(filters * alpha)` channels, as in
    keras.applications (no rounding to multiples of 8 in V1; timm's layout rounds); `head` adds
    timm's 1x1 conv + BN + ReLU6 (`conv_head`) before the pooling. Returns the `keras.Model`.
    """
    inputs, x = image_input(input_shape, opts)
    x, padding = padded(x, 3, 2, opts, "conv1_pad")
    stem = layers.Conv2D(_width(STEM_FILTERS, alpha, layout), 3, strides=2, padding=padding, use_bias=False,
                         kernel_regularizer=opts.reg, name="conv1")
    x = relu6(conv_bn(x, stem, "conv1_bn", opts), "conv1_relu", opts)
    for block in place(STAGES, depth_multiplier):
        x = _depthwise_conv_block(x, _width(block.row.filters, alpha, layout), strides=block.row.stride,
                                  block_id=block.position + 1, opts=opts)
    if head:
        conv = layers.Conv2D(max(HEAD_FILTERS, _width(HEAD_FILTERS, alpha, layout)), 1, use_bias=False,
                             kernel_regularizer=opts.reg, name="conv_head")
        x = relu6(conv_bn(x, conv, "conv_head_bn", opts), "conv_head_relu", opts)
    if include_top:
        # The classifier is a 1x1 conv on the pooled map, not a Dense, because that is how the
        # published checkpoints store it.
        x = quantized(layers.GlobalAveragePooling2D(keepdims=True)(x), "pool_quant", opts)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        preds = layers.Conv2D(num_classes, 1, padding="same", kernel_regularizer=opts.reg, name="conv_preds")
        x = quantized(conv_with_bias(x, preds, opts), "conv_preds_quant", opts)
        x = layers.Reshape((num_classes,), name="reshape_2")(x)
        # Mixed-precision models still return float32 probabilities.
        x = layers.Activation("softmax", dtype=head_dtype(), name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def timm_layers(*, depth_multiplier=1.0, head=False, **_) -> dict[str, str]:
    """{our layer: timm's module} of timm's MobileNet V1 (its EfficientNet class, 'dsa' blocks)."""
    names = timm_names(place(STAGES, depth_multiplier), lambda b: {
        f"conv_dw_{b.position + 1}": "conv_dw", f"conv_dw_{b.position + 1}_bn": "bn1",
        f"conv_pw_{b.position + 1}": "conv_pw", f"conv_pw_{b.position + 1}_bn": "bn2"})
    names.update({"conv1": "conv_stem", "conv1_bn": "bn1", "conv_preds": "classifier"})
    if head:
        names.update({"conv_head": "conv_head", "conv_head_bn": "bn2"})
    return names
