"""MobileNet V4 (Qin et al. 2024, https://arxiv.org/abs/2404.10518): the convolutional models and
the hybrids, whose last stages interleave Mobile MQA attention with the convolutional blocks.

The conv tables are TF Model Garden's (`official/vision/modeling/backbones/mobilenet.py`:
MNV4ConvSmall_BLOCK_SPECS, _mnv4_conv_medium_block_specs, MNV4ConvLarge_BLOCK_SPECS), which are the
paper's Tables 11-13 and timm's `mobilenetv4_conv_small/medium/large` block strings, block for
block, in timm's stages; the hybrid tables are timm's `mobilenetv4_hybrid_medium/large`. Keras
has no MobileNet V4, so the layer names are ours: `stem`, then `block_<i>_` + the part
(`start_dw`, `expand`, `middle_dw`, `project`, `fused`, `conv`, each followed by `_bn` and, where
the block has one, an activation; `layer_scale` in the hybrids; an attention block's `norm`,
`query`, `key_down`, `key`, `value_down`, `value`, `attention_*`, `output`), and the head `conv_1`
(960, batch norm, activation), `avg_pool`, `conv_2` (1280, batch norm, activation, no bias: Model
Garden's and timm's head, which quantizes as a folded convolution), `predictions`.

timm's layout (`layout="timm"`): symmetric padding, the stem kept at its 1.0 width below 1.0, the
1280 after the pooling kept at any width.
"""

from __future__ import annotations

import collections

import keras
import tensorflow as tf
from keras import layers

from mobilenet_tf.models.layers import (
    Options,
    activation,
    batch_norm,
    classifier,
    conv_bn,
    conv_with_bias,
    image_input,
    make_divisible,
    padded,
    quantized,
)
from mobilenet_tf.models.stages import place, timm_names

# kind: "conv" (a kxk conv, batch norm, activation), "fused" (the fused inverted bottleneck: a kxk
# conv expanding, then a linear 1x1 projection), "uib" (the universal inverted bottleneck) or
# "mqa" (Mobile MQA attention); start and middle: the UIB's depthwise kernels before the expansion
# and after it, 0 for none (the inverted bottleneck has the middle one only, ConvNext-like the
# start one only, ExtraDW both, FFN neither); kernel: the conv's or fused block's kernel, or the
# depthwise conv that downsamples an attention block's keys and values by `kv_stride`; heads and
# key_dim: the attention's query heads and the size of each query, key and value.
Block = collections.namedtuple("Block", "kind start middle kernel stride filters expansion heads key_dim kv_stride",
                               defaults=(0, 0, 1))


def conv(kernel, stride, filters):
    return Block("conv", 0, 0, kernel, stride, filters, None)


def fused_ib(kernel, stride, filters, expansion):
    return Block("fused", 0, 0, kernel, stride, filters, expansion)


def uib(start, middle, stride, filters, expansion):
    return Block("uib", start, middle, 0, stride, filters, expansion)


def mqa(heads, key_dim, filters, kv_stride=1):
    return Block("mqa", 0, 0, 3, 1, filters, None, heads, key_dim, kv_stride)


# Stages of (repeats, block); a stage's first block takes its stride. The stem is not a stage.
CONV_SMALL = (
    ((1, conv(3, 2, 32)), (1, conv(1, 1, 32))),  # 56px: the paper's FusedIB, as Model Garden writes it
    ((1, conv(3, 2, 96)), (1, conv(1, 1, 64))),  # 28px
    ((1, uib(5, 5, 2, 96, 3.0)), (4, uib(0, 3, 1, 96, 2.0)), (1, uib(3, 0, 1, 96, 4.0))),  # 14px: ExtraDW, IB, ConvNext
    ((1, uib(3, 3, 2, 128, 6.0)), (1, uib(5, 5, 1, 128, 4.0)), (1, uib(0, 5, 1, 128, 4.0)),  # 7px: ExtraDW, IB
     (1, uib(0, 5, 1, 128, 3.0)), (2, uib(0, 3, 1, 128, 4.0))),
)
CONV_MEDIUM = (
    ((1, fused_ib(3, 2, 48, 4.0)),),
    ((1, uib(3, 5, 2, 80, 4.0)), (1, uib(3, 3, 1, 80, 2.0))),
    ((1, uib(3, 5, 2, 160, 6.0)), (2, uib(3, 3, 1, 160, 4.0)), (1, uib(3, 5, 1, 160, 4.0)), (1, uib(3, 3, 1, 160, 4.0)),
     (1, uib(3, 0, 1, 160, 4.0)), (1, uib(0, 0, 1, 160, 2.0)), (1, uib(3, 0, 1, 160, 4.0))),
    ((1, uib(5, 5, 2, 256, 6.0)), (1, uib(5, 5, 1, 256, 4.0)), (2, uib(3, 5, 1, 256, 4.0)), (1, uib(0, 0, 1, 256, 4.0)),
     (1, uib(3, 0, 1, 256, 4.0)), (1, uib(3, 5, 1, 256, 2.0)), (1, uib(5, 5, 1, 256, 4.0)), (2, uib(0, 0, 1, 256, 4.0)),
     (1, uib(5, 0, 1, 256, 2.0))),
)
CONV_LARGE = (
    ((1, fused_ib(3, 2, 48, 4.0)),),
    ((1, uib(3, 5, 2, 96, 4.0)), (1, uib(3, 3, 1, 96, 4.0))),
    ((1, uib(3, 5, 2, 192, 4.0)), (3, uib(3, 3, 1, 192, 4.0)), (1, uib(3, 5, 1, 192, 4.0)), (5, uib(5, 3, 1, 192, 4.0)),
     (1, uib(3, 0, 1, 192, 4.0))),
    ((4, uib(5, 5, 2, 512, 4.0)), (1, uib(5, 0, 1, 512, 4.0)), (1, uib(5, 3, 1, 512, 4.0)), (2, uib(5, 0, 1, 512, 4.0)),
     (1, uib(5, 3, 1, 512, 4.0)), (1, uib(5, 5, 1, 512, 4.0)), (3, uib(5, 0, 1, 512, 4.0))),
)
# timm's hybrids: Medium's attention has 4 heads of 64, Large's 8 of 48 (stage 3) and 8 of 64
# (stage 4); in the 16x stage keys and values are downsampled 2x (kv_stride).
HYBRID_MEDIUM = (
    ((1, fused_ib(3, 2, 48, 4.0)),),
    ((1, uib(3, 5, 2, 80, 4.0)), (1, uib(3, 3, 1, 80, 2.0))),
    ((1, uib(3, 5, 2, 160, 6.0)), (1, uib(0, 0, 1, 160, 2.0)), (1, uib(3, 3, 1, 160, 4.0)), (1, uib(3, 5, 1, 160, 4.0)),
     (1, mqa(4, 64, 160, 2)), (1, uib(3, 3, 1, 160, 4.0)), (1, mqa(4, 64, 160, 2)), (1, uib(3, 0, 1, 160, 4.0)),
     (1, mqa(4, 64, 160, 2)), (1, uib(3, 3, 1, 160, 4.0)), (1, mqa(4, 64, 160, 2)), (1, uib(3, 0, 1, 160, 4.0))),
    ((1, uib(5, 5, 2, 256, 6.0)), (1, uib(5, 5, 1, 256, 4.0)), (2, uib(3, 5, 1, 256, 4.0)), (1, uib(0, 0, 1, 256, 2.0)),
     (1, uib(3, 5, 1, 256, 2.0)), (1, uib(0, 0, 1, 256, 2.0)), (1, uib(0, 0, 1, 256, 4.0)), (1, mqa(4, 64, 256)),
     (1, uib(3, 0, 1, 256, 4.0)), (1, mqa(4, 64, 256)), (1, uib(5, 5, 1, 256, 4.0)), (1, mqa(4, 64, 256)),
     (1, uib(5, 0, 1, 256, 4.0)), (1, mqa(4, 64, 256)), (1, uib(5, 0, 1, 256, 4.0))),
)
HYBRID_LARGE = (
    ((1, fused_ib(3, 2, 48, 4.0)),),
    ((1, uib(3, 5, 2, 96, 4.0)), (1, uib(3, 3, 1, 96, 4.0))),
    ((1, uib(3, 5, 2, 192, 4.0)), (3, uib(3, 3, 1, 192, 4.0)), (1, uib(3, 5, 1, 192, 4.0)), (2, uib(5, 3, 1, 192, 4.0)),
     (1, mqa(8, 48, 192, 2)), (1, uib(5, 3, 1, 192, 4.0)), (1, mqa(8, 48, 192, 2)), (1, uib(5, 3, 1, 192, 4.0)),
     (1, mqa(8, 48, 192, 2)), (1, uib(5, 3, 1, 192, 4.0)), (1, mqa(8, 48, 192, 2)), (1, uib(3, 0, 1, 192, 4.0))),
    ((4, uib(5, 5, 2, 512, 4.0)), (1, uib(5, 0, 1, 512, 4.0)), (1, uib(5, 3, 1, 512, 4.0)), (2, uib(5, 0, 1, 512, 4.0)),
     (1, uib(5, 3, 1, 512, 4.0)), (1, uib(5, 5, 1, 512, 4.0)), (1, mqa(8, 64, 512)), (1, uib(5, 0, 1, 512, 4.0)),
     (1, mqa(8, 64, 512)), (1, uib(5, 0, 1, 512, 4.0)), (1, mqa(8, 64, 512)), (1, uib(5, 0, 1, 512, 4.0)),
     (1, mqa(8, 64, 512)), (1, uib(5, 0, 1, 512, 4.0))),
)
# Each model: its stem's filters, its stages, its activation, and whether its blocks scale their
# branch (timm's layer scale, in the hybrids).
Spec = collections.namedtuple("Spec", "stem stages act layer_scale")
SPECS = {
    "conv_small": Spec(32, CONV_SMALL, "relu", False),
    "conv_medium": Spec(32, CONV_MEDIUM, "relu", False),
    "conv_large": Spec(24, CONV_LARGE, "relu", False),
    "hybrid_medium": Spec(32, HYBRID_MEDIUM, "relu", True),
    "hybrid_large": Spec(24, HYBRID_LARGE, "gelu", True),
}
HEAD_FILTERS = (960, 1280)  # the 1x1 conv before the pooling, and the one after it
LAYER_SCALE_INIT = 1e-5  # timm's


def blocks(size):
    """The placed blocks (see `stages.place`) of V4 `size`."""
    return place(SPECS[size].stages)


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


@keras.saving.register_keras_serializable("mobilenet_tf")
class LayerScale(layers.Layer):
    """Multiplies each channel by a learned factor, initially `init` (Touvron et al. 2021; timm's
    LayerScale2d): a residual branch starts near zero."""

    def __init__(self, init: float = LAYER_SCALE_INIT, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init))

    def call(self, inputs):
        return inputs * tf.cast(self.gamma, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable("mobilenet_tf")
class AttentionLogits(layers.Layer):
    """Multi-query attention's logits: every one of the `num_heads` queries at every position
    against the one shared key at every (downsampled) position. Inputs: queries [B, H, W, heads x
    key_dim] (head-major channels, as timm's projection), keys [B, h, w, key_dim]; output
    [B, H x W x heads, h x w]."""

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def call(self, inputs):
        queries, keys = inputs
        key_dim = keys.shape[-1]
        queries = tf.reshape(queries, [-1, queries.shape[1] * queries.shape[2] * self.num_heads, key_dim])
        keys = tf.reshape(keys, [-1, keys.shape[1] * keys.shape[2], key_dim])
        return tf.matmul(queries, keys, transpose_b=True)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@keras.saving.register_keras_serializable("mobilenet_tf")
class AttentionSoftmax(layers.Layer):
    """Softmax over the keys: Keras' Softmax computes the same but warns whenever there is one key
    (a small input's downsampled 7x7 stage), which is no mistake here."""

    def call(self, inputs):
        return tf.nn.softmax(inputs, axis=-1)


@keras.saving.register_keras_serializable("mobilenet_tf")
class AttentionValues(layers.Layer):
    """Multi-query attention's output: the attention weights [B, H x W x heads, h x w] times the
    one shared value [B, h, w, value_dim], as [B, H, W, heads x value_dim] (head-major channels)."""

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = height, width

    def call(self, inputs):
        weights, values = inputs
        values = tf.reshape(values, [-1, values.shape[1] * values.shape[2], values.shape[3]])
        outputs = tf.matmul(weights, values)
        return tf.reshape(outputs, [-1, self.height, self.width, outputs.shape[1] // (self.height * self.width)
                                    * values.shape[2]])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


def _residual(x, shortcut, *, stride, prefix, drop_rate, opts, layer_scale=False):
    """The branch `x` scaled (layer scale, when the model has it), then the add of `shortcut` (with
    stochastic depth on the branch) when the block keeps its shape."""
    if layer_scale:
        x = quantized(LayerScale(name=f"{prefix}layer_scale")(x), f"{prefix}layer_scale_quant", opts)
    if stride != 1 or shortcut.shape[-1] != x.shape[-1]:
        return x
    if drop_rate:
        x = StochasticDepth(drop_rate, name=f"{prefix}drop_path")(x)
    return quantized(layers.Add(name=f"{prefix}add")([shortcut, x]), f"{prefix}add_quant", opts)


def _depthwise_bn(x, kernel, stride, name, opts):
    """A kxk depthwise conv and its batch norm."""
    x, padding = padded(x, kernel, stride, opts, f"{name}_pad")
    conv_layer = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False, name=name)
    return conv_bn(x, conv_layer, f"{name}_bn", opts)


def _conv_bn_act(x, filters, kernel, stride, name, opts, act):
    """A kxk conv, batch norm and activation: the stem, Conv-S's early layers, the head."""
    x, padding = padded(x, kernel, stride, opts, f"{name}_pad")
    conv_layer = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                               kernel_regularizer=opts.reg, name=name)
    return activation(conv_bn(x, conv_layer, f"{name}_bn", opts), act, f"{name}_{act}", opts)


def _project_bn(x, filters, prefix, opts):
    """The linear 1x1 projection and its batch norm, no activation."""
    conv_layer = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_regularizer=opts.reg,
                               name=f"{prefix}project")
    return quantized(conv_bn(x, conv_layer, f"{prefix}project_bn", opts), f"{prefix}project_quant", opts)


def _fused_inverted_bottleneck(x, block, filters, prefix, opts, drop_rate, act="relu", layer_scale=False):
    """A kxk conv expanding to `expansion` x the input channels (batch norm, activation), then the
    linear 1x1 projection (paper section 3.2: the early stages' FusedIB)."""
    shortcut = x
    expanded = make_divisible(x.shape[-1] * block.expansion)
    x = _conv_bn_act(x, expanded, block.kernel, block.stride, f"{prefix}fused", opts, act)
    x = _project_bn(x, filters, prefix, opts)
    return _residual(x, shortcut, stride=block.stride, prefix=prefix, drop_rate=drop_rate, opts=opts)


def _universal_inverted_bottleneck(x, block, filters, prefix, opts, drop_rate, act="relu", layer_scale=False):
    """The Universal Inverted Bottleneck (paper section 3.1, Figure 4): an optional depthwise conv
    before the expansion (batch norm, no activation), the 1x1 expansion (activation), an optional
    depthwise conv after it (activation), which takes the stride when it is there, and the linear
    1x1 projection. Start and middle depthwise give ExtraDW, the middle one alone the inverted
    bottleneck, the start one alone ConvNext-like, neither the FFN."""
    shortcut = x
    if block.start:
        stride = 1 if block.middle else block.stride
        x = quantized(_depthwise_bn(x, block.start, stride, f"{prefix}start_dw", opts), f"{prefix}start_dw_quant", opts)
    expand = layers.Conv2D(make_divisible(shortcut.shape[-1] * block.expansion), 1, padding="same", use_bias=False,
                           kernel_regularizer=opts.reg, name=f"{prefix}expand")
    x = activation(conv_bn(x, expand, f"{prefix}expand_bn", opts), act, f"{prefix}expand_{act}", opts)
    if block.middle:
        x = _depthwise_bn(x, block.middle, block.stride, f"{prefix}middle_dw", opts)
        x = activation(x, act, f"{prefix}middle_dw_{act}", opts)
    x = _project_bn(x, filters, prefix, opts)
    return _residual(x, shortcut, stride=block.stride, prefix=prefix, drop_rate=drop_rate, opts=opts,
                     layer_scale=layer_scale)


def _mobile_mqa(x, block, filters, prefix, opts, drop_rate, act="relu", layer_scale=False):
    """Mobile MQA (paper section 3.3): batch norm, then multi-query attention, `heads` queries
    sharing one key and one value, those two computed from the input downsampled by a strided
    depthwise conv (and its batch norm) when `kv_stride` is 2; a 1x1 projection of the heads'
    outputs, and the residual. Every projection is a bias-free 1x1 conv, as timm's."""
    shortcut = x
    x = batch_norm(x, f"{prefix}norm", opts)

    def projection(inputs, channels, name):
        conv_layer = layers.Conv2D(channels, 1, use_bias=False, kernel_regularizer=opts.reg, name=f"{prefix}{name}")
        return quantized(conv_with_bias(inputs, conv_layer, opts), f"{prefix}{name}_quant", opts)

    def shared(name):  # the key or the value: one head, from the downsampled input
        source = x
        if block.kv_stride > 1:
            down = _depthwise_bn(x, block.kernel, block.kv_stride, f"{prefix}{name}_down", opts)
            source = quantized(down, f"{prefix}{name}_down_quant", opts)
        return projection(source, block.key_dim, name)

    queries = projection(x, block.heads * block.key_dim, "query")
    queries = layers.Rescaling(block.key_dim ** -0.5, name=f"{prefix}query_scale")(queries)
    queries = quantized(queries, f"{prefix}query_scale_quant", opts)
    logits = AttentionLogits(block.heads, name=f"{prefix}attention_logits")([queries, shared("key")])
    weights = AttentionSoftmax(name=f"{prefix}attention_softmax")(quantized(logits, f"{prefix}attention_logits_quant",
                                                                            opts))
    weights = quantized(weights, f"{prefix}attention_softmax_quant", opts, fixed_range=(0.0, 1.0))
    heads = AttentionValues(*x.shape[1:3], name=f"{prefix}attention")([weights, shared("value")])
    x = projection(quantized(heads, f"{prefix}attention_quant", opts), filters, "output")
    return _residual(x, shortcut, stride=1, prefix=prefix, drop_rate=drop_rate, opts=opts, layer_scale=layer_scale)


_BLOCKS = {"fused": _fused_inverted_bottleneck, "uib": _universal_inverted_bottleneck, "mqa": _mobile_mqa}


def mobilenet_v4(
    *,
    size,
    alpha,
    input_shape,
    num_classes,
    include_top,
    dropout,
    opts: Options,
    layout="keras",
    stochastic_depth=0.0,
    name="mobilenet_v4",
    **_,
):
    """Builds MobileNet V4 `size` ("conv_small", "conv_medium", "conv_large", "hybrid_medium" or
    "hybrid_large") as a functional Keras model. Arguments mean what they mean in `build_model`;
    `alpha` gives every layer `make_divisible(c * alpha)` channels, but the 1280 after the
    pooling, which widens only above 1 (Model Garden's fine-grain classification mode; never in
    timm's layout, which also keeps the stem below 1); `stochastic_depth` is the peak drop rate of
    the residual branches, reached after the last row of the spec, the rate growing linearly with
    the row (Model Garden's `flat_stochastic_depth_drop_rate=False`). Without the top the output is
    the last feature map (after `conv_1`). Returns the `keras.Model`.
    """
    spec = SPECS[size]
    timm = layout == "timm"
    act = spec.act
    placed = blocks(size)
    inputs, x = image_input(input_shape, opts)
    stem_filters = spec.stem if timm and alpha < 1.0 else make_divisible(spec.stem * alpha)
    x = _conv_bn_act(x, stem_filters, 3, 2, "stem", opts, act)
    for block in placed:
        block_id = block.position + 1
        prefix = f"block_{block_id}_"
        row = block.row
        filters = make_divisible(row.filters * alpha)
        # Model Garden's rate of spec row i (the stem is row 0; the head's three rows count too).
        drop_rate = stochastic_depth * (block_id + 1) / (len(placed) + 4)
        if row.kind == "conv":
            x = _conv_bn_act(x, filters, row.kernel, row.stride, f"{prefix}conv", opts, act)
        else:
            x = _BLOCKS[row.kind](x, row, filters, prefix, opts, drop_rate, act=act, layer_scale=spec.layer_scale)
    before_pool, after_pool = HEAD_FILTERS
    x = _conv_bn_act(x, make_divisible(before_pool * alpha), 1, 1, "conv_1", opts, act)
    if include_top:
        x = quantized(layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x), "avg_pool_quant", opts)
        width = make_divisible(after_pool * alpha) if alpha > 1.0 and not timm else after_pool
        x = _conv_bn_act(x, width, 1, 1, "conv_2", opts, act)
        x = layers.Flatten(name="flatten")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
        x = classifier(x, num_classes, opts)
    return keras.Model(inputs, x, name=name)


# timm's module of each part of a block (its ConvBnAct, EdgeResidual, UniversalInvertedResidual and
# MobileAttention), by our layer name after the block's prefix.
_TIMM_PARTS = {
    "conv": {"conv": "conv", "conv_bn": "bn1"},
    "fused": {"fused": "conv_exp", "fused_bn": "bn1", "project": "conv_pwl", "project_bn": "bn2"},
    "uib": {"start_dw": "dw_start.conv", "start_dw_bn": "dw_start.bn", "expand": "pw_exp.conv",
            "expand_bn": "pw_exp.bn", "middle_dw": "dw_mid.conv", "middle_dw_bn": "dw_mid.bn",
            "project": "pw_proj.conv", "project_bn": "pw_proj.bn", "layer_scale": "layer_scale"},
    "mqa": {"norm": "norm", "query": "attn.query.proj", "key_down": "attn.key.down_conv",
            "key_down_bn": "attn.key.norm", "key": "attn.key.proj", "value_down": "attn.value.down_conv",
            "value_down_bn": "attn.value.norm", "value": "attn.value.proj", "output": "attn.output.proj",
            "layer_scale": "layer_scale"},
}


def timm_layers(*, size, **_) -> dict[str, str]:
    """{our layer: timm's module} of timm's MobileNet V4 (its MobileNetV3 class: 'cn', 'er', 'uir'
    and 'mqa' blocks, a 'cn' stage for `conv_1`). Parts a block does not have are named too; the
    loader maps only the layers the model has."""
    placed = blocks(size)

    def parts(block):
        return {f"block_{block.position + 1}_{ours}": theirs for ours, theirs in _TIMM_PARTS[block.row.kind].items()}

    last = f"blocks.{placed[-1].stage + 1}.0"
    return {**timm_names(placed, parts), "stem": "conv_stem", "stem_bn": "bn1", "conv_1": f"{last}.conv",
            "conv_1_bn": f"{last}.bn1", "conv_2": "conv_head", "conv_2_bn": "norm_head", "predictions": "classifier"}
