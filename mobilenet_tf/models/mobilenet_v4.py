"""MobileNet V4, the convolutional models (Qin et al. 2024, https://arxiv.org/abs/2404.10518).

The block tables are TF Model Garden's (`official/vision/modeling/backbones/mobilenet.py`:
MNV4ConvSmall_BLOCK_SPECS, _mnv4_conv_medium_block_specs, MNV4ConvLarge_BLOCK_SPECS), which are the
paper's Tables 11-13 and timm's `mobilenetv4_conv_small/medium/large` block strings, block for
block. Keras has no MobileNet V4 and no Keras or TensorFlow weights are published, so the layer
names are ours: `stem`, then `block_<i>_` + the part (`start_dw`, `expand`, `middle_dw`, `project`,
`fused`, `conv`, each followed by `_bn` and, where the block has one, an activation), and the head
`conv_1` (960, batch norm, ReLU), `avg_pool`, `conv_2` (1280, batch norm, ReLU, no bias: Model
Garden's and timm's head, which quantizes as a folded convolution), `predictions`.
"""

from __future__ import annotations

import collections

import keras
import tensorflow as tf
from keras import layers

from mobilenet_tf.models.layers import (
    activation,
    classifier,
    conv_bn,
    image_input,
    make_divisible,
    quantized,
    regularizer,
)

# kind: "conv" (a kxk conv, batch norm, ReLU), "fused" (the fused inverted bottleneck: a kxk conv
# expanding, then a linear 1x1 projection) or "uib" (the universal inverted bottleneck); start and
# middle: the UIB's depthwise kernels before the expansion and after it, 0 for none (the
# inverted bottleneck has the middle one only, ConvNext-like the start one only, ExtraDW both,
# FFN neither); kernel: the conv's or fused block's kernel.
Block = collections.namedtuple("Block", "kind start middle kernel stride filters expansion")


def conv(kernel, stride, filters):
    return Block("conv", 0, 0, kernel, stride, filters, None)


def fused_ib(kernel, stride, filters, expansion):
    return Block("fused", 0, 0, kernel, stride, filters, expansion)


def uib(start, middle, stride, filters, expansion):
    return Block("uib", start, middle, 0, stride, filters, expansion)


CONV_SMALL = (
    conv(3, 2, 32),  # stem, 112px at 224
    conv(3, 2, 32), conv(1, 1, 32),  # 56px: the paper's FusedIB, as Model Garden writes it
    conv(3, 2, 96), conv(1, 1, 64),  # 28px
    uib(5, 5, 2, 96, 3.0),  # 14px, ExtraDW
    uib(0, 3, 1, 96, 2.0), uib(0, 3, 1, 96, 2.0), uib(0, 3, 1, 96, 2.0), uib(0, 3, 1, 96, 2.0),  # IB
    uib(3, 0, 1, 96, 4.0),  # ConvNext
    uib(3, 3, 2, 128, 6.0),  # 7px, ExtraDW
    uib(5, 5, 1, 128, 4.0),  # ExtraDW
    uib(0, 5, 1, 128, 4.0), uib(0, 5, 1, 128, 3.0), uib(0, 3, 1, 128, 4.0), uib(0, 3, 1, 128, 4.0),  # IB
)
CONV_MEDIUM = (
    conv(3, 2, 32),  # stem
    fused_ib(3, 2, 48, 4.0),
    uib(3, 5, 2, 80, 4.0), uib(3, 3, 1, 80, 2.0),
    uib(3, 5, 2, 160, 6.0), uib(3, 3, 1, 160, 4.0), uib(3, 3, 1, 160, 4.0), uib(3, 5, 1, 160, 4.0),
    uib(3, 3, 1, 160, 4.0), uib(3, 0, 1, 160, 4.0), uib(0, 0, 1, 160, 2.0), uib(3, 0, 1, 160, 4.0),
    uib(5, 5, 2, 256, 6.0), uib(5, 5, 1, 256, 4.0), uib(3, 5, 1, 256, 4.0), uib(3, 5, 1, 256, 4.0),
    uib(0, 0, 1, 256, 4.0), uib(3, 0, 1, 256, 4.0), uib(3, 5, 1, 256, 2.0), uib(5, 5, 1, 256, 4.0),
    uib(0, 0, 1, 256, 4.0), uib(0, 0, 1, 256, 4.0), uib(5, 0, 1, 256, 2.0),
)
CONV_LARGE = (
    conv(3, 2, 24),  # stem
    fused_ib(3, 2, 48, 4.0),
    uib(3, 5, 2, 96, 4.0), uib(3, 3, 1, 96, 4.0),
    uib(3, 5, 2, 192, 4.0), uib(3, 3, 1, 192, 4.0), uib(3, 3, 1, 192, 4.0), uib(3, 3, 1, 192, 4.0),
    uib(3, 5, 1, 192, 4.0), uib(5, 3, 1, 192, 4.0), uib(5, 3, 1, 192, 4.0), uib(5, 3, 1, 192, 4.0),
    uib(5, 3, 1, 192, 4.0), uib(5, 3, 1, 192, 4.0), uib(3, 0, 1, 192, 4.0),
    uib(5, 5, 2, 512, 4.0), uib(5, 5, 1, 512, 4.0), uib(5, 5, 1, 512, 4.0), uib(5, 5, 1, 512, 4.0),
    uib(5, 0, 1, 512, 4.0), uib(5, 3, 1, 512, 4.0), uib(5, 0, 1, 512, 4.0), uib(5, 0, 1, 512, 4.0),
    uib(5, 3, 1, 512, 4.0), uib(5, 5, 1, 512, 4.0), uib(5, 0, 1, 512, 4.0), uib(5, 0, 1, 512, 4.0),
    uib(5, 0, 1, 512, 4.0),
)
BLOCKS = {"small": CONV_SMALL, "medium": CONV_MEDIUM, "large": CONV_LARGE}
HEAD_FILTERS = (960, 1280)  # the 1x1 conv before the pooling, and the one after it


@keras.saving.register_keras_serializable("mobilenet_tf")
class StochasticDepth(layers.Layer):
    """Drops a residual branch for a whole example with probability `rate` while training, scaling the
    kept ones by 1 / (1 - rate) (Huang et al. 2016; Model Garden's and timm's drop path); the
    identity at inference. Its random draws come from a seed generator the checkpoint holds (see
    `train.rng_states`), so a resumed run draws what the uninterrupted one drew."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or not self.rate:
            return inputs
        keep = 1.0 - self.rate
        shape = [tf.shape(inputs)[0]] + [1] * (len(inputs.shape) - 1)
        mask = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype) < keep
        return inputs * tf.cast(mask, inputs.dtype) / tf.cast(keep, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def _residual(x, shortcut, *, stride, prefix, drop_rate, quant):
    """The add of `shortcut` (with stochastic depth on the branch) when the block keeps its shape."""
    if stride != 1 or shortcut.shape[-1] != x.shape[-1]:
        return x
    if drop_rate:
        x = StochasticDepth(drop_rate, name=f"{prefix}drop_path")(x)
    return quantized(layers.Add(name=f"{prefix}add")([shortcut, x]), f"{prefix}add_quant", quant)


def _depthwise_bn(x, kernel, stride, name, bn, quant):
    """A kxk depthwise conv ('same' padding) and its batch norm."""
    conv_layer = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=name)
    return conv_bn(x, conv_layer, f"{name}_bn", bn, quant)


def _conv_bn_relu(x, filters, kernel, stride, name, bn, reg, quant):
    """A kxk conv ('same' padding), batch norm and ReLU: the stem, Conv-S's early layers, the head."""
    conv_layer = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                               kernel_regularizer=reg, name=name)
    return activation(conv_bn(x, conv_layer, f"{name}_bn", bn, quant), "relu", f"{name}_relu", quant)


def _project_bn(x, filters, prefix, bn, reg, quant):
    """The linear 1x1 projection and its batch norm, no activation."""
    conv_layer = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_regularizer=reg,
                               name=f"{prefix}project")
    return quantized(conv_bn(x, conv_layer, f"{prefix}project_bn", bn, quant), f"{prefix}project_quant", quant)


def _fused_inverted_bottleneck(x, block, filters, prefix, bn, reg, quant, drop_rate):
    """A kxk conv expanding to `expansion` x the input channels (batch norm, ReLU), then the linear
    1x1 projection (paper section 3.2: the early stages' FusedIB)."""
    shortcut = x
    expanded = make_divisible(x.shape[-1] * block.expansion)
    x = _conv_bn_relu(x, expanded, block.kernel, block.stride, f"{prefix}fused", bn, reg, quant)
    x = _project_bn(x, filters, prefix, bn, reg, quant)
    return _residual(x, shortcut, stride=block.stride, prefix=prefix, drop_rate=drop_rate, quant=quant)


def _universal_inverted_bottleneck(x, block, filters, prefix, bn, reg, quant, drop_rate):
    """The Universal Inverted Bottleneck (paper section 3.1, Figure 4): an optional depthwise conv
    before the expansion (batch norm, no activation), the 1x1 expansion (ReLU), an optional
    depthwise conv after it (ReLU), which takes the stride when it is there, and the linear 1x1
    projection. Start and middle depthwise give ExtraDW, the middle one alone the inverted
    bottleneck, the start one alone ConvNext-like, neither the FFN."""
    shortcut = x
    if block.start:
        stride = 1 if block.middle else block.stride
        x = quantized(_depthwise_bn(x, block.start, stride, f"{prefix}start_dw", bn, quant), f"{prefix}start_dw_quant",
                      quant)
    expand = layers.Conv2D(make_divisible(shortcut.shape[-1] * block.expansion), 1, padding="same", use_bias=False,
                           kernel_regularizer=reg, name=f"{prefix}expand")
    x = activation(conv_bn(x, expand, f"{prefix}expand_bn", bn, quant), "relu", f"{prefix}expand_relu", quant)
    if block.middle:
        x = _depthwise_bn(x, block.middle, block.stride, f"{prefix}middle_dw", bn, quant)
        x = activation(x, "relu", f"{prefix}middle_dw_relu", quant)
    x = _project_bn(x, filters, prefix, bn, reg, quant)
    return _residual(x, shortcut, stride=block.stride, prefix=prefix, drop_rate=drop_rate, quant=quant)


def mobilenet_v4(
    *,
    size,
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
    stochastic_depth=0.0,
    name="mobilenet_v4",
):
    """Builds MobileNet V4-Conv `size` ("small", "medium" or "large") as a functional Keras model.
    Arguments mean what they mean in `build_model`; `alpha` gives every layer
    `make_divisible(c * alpha)` channels, but the 1280 after the pooling, which widens only above 1
    (Model Garden's fine-grain classification mode); `stochastic_depth` is the peak drop rate of
    the residual branches, reached after the last row of the spec, the rate growing linearly
    with the row (Model Garden's `flat_stochastic_depth_drop_rate=False`). Without the top the output is the last feature map
    (after `conv_1`). Returns the `keras.Model`.
    """
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, synchronized=sync_bn)
    reg = regularizer(weight_decay)
    blocks = BLOCKS[size]
    inputs, x = image_input(input_shape, include_preprocessing, quant)
    stem = blocks[0]
    x = _conv_bn_relu(x, make_divisible(stem.filters * alpha), stem.kernel, stem.stride, "stem", bn, reg, quant)
    for block_id, block in enumerate(blocks[1:], start=1):
        prefix = f"block_{block_id}_"
        filters = make_divisible(block.filters * alpha)
        # Model Garden's rate of spec row i (the stem is row 0; the head's three rows count too).
        drop_rate = stochastic_depth * (block_id + 1) / (len(blocks) + 3)
        if block.kind == "conv":
            x = _conv_bn_relu(x, filters, block.kernel, block.stride, f"{prefix}conv", bn, reg, quant)
        elif block.kind == "fused":
            x = _fused_inverted_bottleneck(x, block, filters, prefix, bn, reg, quant, drop_rate)
        else:
            x = _universal_inverted_bottleneck(x, block, filters, prefix, bn, reg, quant, drop_rate)
    before_pool, after_pool = HEAD_FILTERS
    x = _conv_bn_relu(x, make_divisible(before_pool * alpha), 1, 1, "conv_1", bn, reg, quant)
    if include_top:
        x = quantized(layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x), "avg_pool_quant", quant)
        width = make_divisible(after_pool * alpha) if alpha > 1.0 else after_pool
        x = _conv_bn_relu(x, width, 1, 1, "conv_2", bn, reg, quant)
        x = layers.Flatten(name="flatten")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = classifier(x, num_classes, reg, quant)
    return keras.Model(inputs, x, name=name)
