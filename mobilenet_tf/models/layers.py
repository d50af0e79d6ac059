"""Pieces shared by the MobileNet builders: the options they share (`Options`), batch norm, channel
rounding, padding, weight decay, activations and their quantized twins."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading

import keras
import tensorflow as tf
from keras import layers

from mobilenet_tf.models import quantize

# FusedBatchNormV3 raises smaller epsilons to this.
_FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable("mobilenet_tf")
class BatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, fused, with moving statistics averaged over replicas.

    Fused: Keras 3 normalizes with ~10 separate ops (moments, then scale and shift) where tf.keras
    ran one FusedBatchNormV3; on this CPU those ops took more of a MobileNetV2 training step than
    all its convolutions. Here NHWC float32/float16/bfloat16 inputs go through FusedBatchNormV3
    (and its fused gradient): the same outputs, gradients and moving statistics as Keras' ops up
    to float rounding. Synchronized BN, float64 and anything else take Keras' own path.

    Replica-averaged: Keras 3 creates the moving mean and variance with aggregation "none": under
    a tf.distribute strategy every replica (every worker) then keeps the statistics of its own
    share of the batch, and the chief's checkpoint and export hold statistics of only its data.
    With "mean", each update is the mean over replicas, as tf.keras' BatchNormalization did.
    """

    def add_weight(self, *args, **kwargs):
        if not kwargs.get("trainable", True):
            kwargs.setdefault("aggregation", "mean")
        return super().add_weight(*args, **kwargs)

    def _fusable(self, inputs, mask, trains: bool) -> bool:
        # The kernel's floor on epsilon: PyTorch's (timm's) 1e-5 normalizes inference exactly in
        # Keras' ops; training moves the 1e-5 to the floor, 1.001e-5, a change of 5e-9 relative to
        # a unit variance.
        return (
            mask is None and not self.synchronized and not self.renorm and self.center and self.scale
            and len(inputs.shape) == 4 and self.axis in (-1, 3) and (self.epsilon >= _FUSED_MIN_EPSILON or trains)
            and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "float16", "bfloat16")
        )

    def call(self, inputs, training=None, mask=None):
        trains = bool(training) and self.trainable
        if not self._fusable(inputs, mask, trains):
            return super().call(inputs, training=training, mask=mask)
        gamma, beta = (tf.cast(v, tf.float32) for v in (self.gamma, self.beta))
        if trains:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the variance with Bessel's correction; Keras' moving variance
            # averages the biased one (the one that normalized the batch).
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
            variance = variance * tf.maximum(count - 1.0, 0.0) / count
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + tf.stop_gradient(batch) * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return tf.cast(outputs, self.compute_dtype)


# Whether the thread tracing a layer call is inside `pointwise_as_matmul()`: MirroredStrategy traces
# each replica's step in a thread of its own.
_MATMUL_SCOPE = threading.local()


def pointwise_convolutions_as_matmul(model: keras.Model) -> None:
    """Let the model's 1x1 stride-1 Conv2D layers run as one MatMul inside `pointwise_as_matmul()`.

    The same product: [batch * height * width, in] @ [in, out], the kernel's [1, 1, in, out] read as
    [in, out]. On this CPU TensorFlow's MatMul and its two gradient MatMuls take less time than its
    oneDNN Conv2D and Conv2DBackpropInput/Filter on these shapes: measured 1.06-1.17x the training
    step of V2, V3-Small, V4-Conv-S and V4-Conv-M, 1.12-1.48x V3-Large's, in float32 and bfloat16
    (benchmarks/step_changes.py --change=matmul, docs/performance.md). Outside the scope
    (evaluation, every export) the layer stays the Conv2D it was: same weights, names and graphs.
    QAT's QuantConv2D convolves through its own `tf.nn.conv2d` and is left as it is.
    """
    for layer in model.layers:
        if (isinstance(layer, layers.Conv2D) and layer.kernel_size == (1, 1) and layer.strides == (1, 1)
                and layer.dilation_rate == (1, 1) and layer.groups == 1 and layer.data_format == "channels_last"
                and "convolution_op" not in vars(layer)):
            layer.convolution_op = functools.partial(_pointwise_convolution, layer.convolution_op)


def _pointwise_convolution(convolution, inputs, kernel):
    if not getattr(_MATMUL_SCOPE, "active", False):
        return convolution(inputs, kernel)
    shape = tf.shape(inputs)
    outputs = tf.linalg.matmul(tf.reshape(inputs, [-1, kernel.shape[2]]), tf.reshape(kernel, kernel.shape[2:]))
    return tf.reshape(outputs, tf.concat([shape[:3], kernel.shape[3:]], 0))


def pointwise_as_matmul():
    """Inside, in this thread, the layers `pointwise_convolutions_as_matmul` prepared compute as MatMul."""
    return thread_scope(_MATMUL_SCOPE)


@contextlib.contextmanager
def thread_scope(local: threading.local):
    """`local.active` is True inside, in this thread: what a layer reads while the training step is
    traced (MirroredStrategy traces each replica's step in a thread of its own)."""
    previous = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = previous


def head_dtype() -> str:
    """The classifier's dtype: float32 under mixed precision (keras.applications would leave the
    softmax in float16), else the global policy's (float64 runs stay float64 end to end)."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else policy.name


def make_divisible(v, divisor=8, min_value=None):
    """Rounds a channel count `v` to the nearest multiple of `divisor`.

    Same rule as keras.applications' `_make_divisible` (and the TF-slim original), so widened or
    thinned models keep the layer shapes of the published checkpoints.

    Args:
      v: the unrounded channel count, e.g. `32 * alpha`.
      divisor: the multiple to round to.
      min_value: the smallest allowed result; `divisor` when None.

    Returns:
      An int multiple of `divisor`, never more than 10% below `v`.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    # Rounding down by more than 10% would cost accuracy the paper's numbers assume.
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def correct_pad(input_hw, kernel):
    """Zero padding that makes a stride-2 'valid' conv behave like TensorFlow's 'SAME'.

    keras.applications pads explicitly before stride-2 depthwise convs (rather than using
    padding="same") and we keep that layout so the layer list, and thus weight loading by name,
    is identical. The pad depends on the parity of each dimension: an even size gets (0, 1),
    an odd one (1, 1), so each output dimension is ceil(size / 2) for any height and width.

    Args:
      input_hw: (height, width) of the feature map to pad; a None entry is treated as even,
        as keras.applications does.
      kernel: an int or a (kh, kw) pair.

    Returns:
      ((top, bottom), (left, right)) for `keras.layers.ZeroPadding2D`.
    """
    if isinstance(kernel, int):
        kernel = (kernel, kernel)
    pads = []
    for size, k in zip(input_hw, kernel):
        odd = size is not None and size % 2 == 1
        half = k // 2
        pads.append((half if odd else half - 1, half))
    return tuple(pads)


def regularizer(weight_decay):
    """Returns the kernel regularizer for `weight_decay`, or None when it is 0.

    Follows the TF Model Garden convention: the penalty is `weight_decay / 2 * sum(w ** 2)`, so
    its gradient is `weight_decay * w` and `weight_decay` means the same thing as an optimizer's
    decoupled decay rate at learning rate 1 (e.g. 4e-5 in the MobileNet papers' recipes). Apply
    it to Conv2D and Dense kernels only: depthwise kernels hold few parameters and decaying them
    hurts (Model Garden's `regularize_depthwise=False`); biases and BN parameters are not decayed.
    """
    if not weight_decay:
        return None
    return keras.regularizers.L2(weight_decay / 2)


PADDINGS = ("same", "symmetric")


@dataclasses.dataclass(frozen=True)
class Options:
    """What every builder's layers share: batch norm, padding, weight decay, the quantized twin and
    the input's normalization. Builders take one of these and pass it down to every block.

    Attributes:
      bn_momentum, bn_epsilon: BatchNormalization's.
      sync_bn: BatchNormalization(synchronized=True): statistics over the global batch of all
        replicas.
      weight_decay: L2 on Conv2D/Dense kernels (see `regularizer`).
      quant: a `quantize.QuantScheme`: build the fake-quantized twin; None for the float model.
      include_preprocessing: the model takes 0-255 pixels and normalizes them inside; otherwise it
        takes pixels in [-1, 1] (keras.applications' convention, what the input pipeline gives).
      padding: "same", TensorFlow's (keras.applications, Model Garden: a strided conv pads more
        after than before), or "symmetric", PyTorch's and timm's (k // 2 on every side).
      mean, std: per RGB channel, in 0-1 units: the normalization the weights were trained with,
        `(pixels / 255 - mean) / std` (timm's convention); 0.5 and 0.5 give [-1, 1].
    """

    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    sync_bn: bool = False
    weight_decay: float = 0.0
    quant: quantize.QuantScheme | None = None
    include_preprocessing: bool = False
    padding: str = "same"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @property
    def bn(self) -> dict:
        return dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon, synchronized=self.sync_bn)

    @property
    def reg(self):
        return regularizer(self.weight_decay)


def padded(x, kernel: int, stride: int, opts: Options, name: str):
    """(x, the `padding` argument) for a kxk convolution of `x` at `stride`: Keras' own "same" for
    TensorFlow's padding or a stride of 1 (where the two agree), else `x` zero-padded by k // 2 on
    every side in a ZeroPadding2D named `name`, and "valid"."""
    if stride == 1 or opts.padding == "same":
        return x, "same"
    return layers.ZeroPadding2D(kernel // 2, name=name)(x), "valid"


def conv_bn(x, conv, bn_name, opts: Options):
    """`conv` (a Conv2D or DepthwiseConv2D layer, not yet called), then a BatchNormalization named
    `bn_name`.

    In a quantized twin the convolution is its fake-quantized twin, which folds the batch norm;
    the batch norm layer keeps its name and weights and passes its input through (see `quantize`).
    """
    if opts.quant is None:
        return BatchNormalization(name=bn_name, **opts.bn)(conv(x))
    norm = quantize.FoldedBatchNormalization(name=bn_name, momentum=opts.bn_momentum, epsilon=opts.bn_epsilon)
    return norm(quantize.quantized_conv(conv, norm, opts.quant)(x))


def batch_norm(x, name, opts: Options):
    """A BatchNormalization named `name` with no convolution before it; in a quantized twin, its
    int8 form (`quantize.QuantBatchNormalization`), its output fake-quantized by `<name>_quant`."""
    if opts.quant is None:
        return BatchNormalization(name=name, **opts.bn)(x)
    norm = quantize.QuantBatchNormalization(name=name, momentum=opts.bn_momentum, epsilon=opts.bn_epsilon,
                                            scheme=opts.quant)
    return quantized(norm(x), f"{name}_quant", opts)


def quantized(x, name, opts: Options, fixed_range=None):
    """`x` fake-quantized per tensor by an activation quantizer named `name` in a quantized twin
    (over `fixed_range` when the values' range is known in advance, else a learned one); `x`
    itself otherwise."""
    if opts.quant is None:
        return x
    return quantize.ActivationQuantizer(opts.quant, fixed_range=fixed_range, name=name)(x)


def relu6(x, name, opts: Options):
    """ReLU6 named `name` (fake-quantized after it, by `<name>_quant`, in a quantized twin)."""
    return activation(x, "relu6", name, opts)


# Activations that TFLite runs as an op of their own (not fused into the convolution before them).
_OWN_OPS = ("hard_swish", "gelu")


def activation(x, kind, name, opts: Options):
    """The activation `kind` ("relu", "relu6", "hard_swish" or "gelu", the exact erf form) named
    `name`.

    In a quantized twin its output is fake-quantized by `<name>_quant`. ReLU and ReLU6 fuse into
    the convolution before them in TFLite, so their input needs no range of its own; hard-swish
    and GELU are ops of their own (int8 in and out), so their input, the convolution's output, is
    fake-quantized too, by `<name>_input_quant`.
    """
    if kind in _OWN_OPS:
        x = quantized(x, f"{name}_input_quant", opts)
        # Keras 3's hard_swish: x * relu6(x + 3) / 6, the pattern TFLite's converter fuses into
        # HARD_SWISH; its gelu: approximate=False, erf.
        return quantized(layers.Activation(kind, name=name)(x), f"{name}_quant", opts)
    return quantized(layers.ReLU(6.0 if kind == "relu6" else None, name=name)(x), f"{name}_quant", opts)


def depthwise_conv_bn(x, strides, pad_name, name, bn_name, opts: Options, kernel=3):
    """A depthwise conv (3x3 unless `kernel` says otherwise), padded explicitly when strided, then
    its batch norm (see `conv_bn`); the twin of V1-V3's blocks.

    Args:
      x: NHWC feature map.
      strides: 1 or 2.
      pad_name: name of the ZeroPadding2D layer added when `strides` is 2.
      name: name of the DepthwiseConv2D layer.
      bn_name: name of its BatchNormalization.
      opts: the builder's `Options`; with "same" padding, keras.applications' explicit
        `correct_pad` (TensorFlow's 'SAME'), with "symmetric" k // 2 on every side.
      kernel: the kernel size.

    Returns:
      The normalized depthwise conv output (no activation). The kernel is not regularized, see
      `regularizer`.
    """
    if strides == 1:
        padding = "same"
    else:
        pad = correct_pad(x.shape[1:3], kernel) if opts.padding == "same" else kernel // 2
        x = layers.ZeroPadding2D(pad, name=pad_name)(x)
        padding = "valid"
    conv = layers.DepthwiseConv2D(kernel, strides=strides, padding=padding, use_bias=False, name=name)
    return conv_bn(x, conv, bn_name, opts)


def project(x, shortcut, *, filters, stride, prefix, bn_name, opts: Options, skip=True):
    """The inverted residual's linear bottleneck: a 1x1 projection to `filters` named
    `<prefix>project` with its batch norm `bn_name` and no activation (MobileNet V2, section 3.2),
    then the add of `shortcut` (`<prefix>add`) when the block keeps its shape (and `skip`); both
    fake-quantized in a quantized twin."""
    conv = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_regularizer=opts.reg,
                         name=f"{prefix}project")
    x = quantized(conv_bn(x, conv, bn_name, opts), f"{prefix}project_quant", opts)
    if skip and stride == 1 and shortcut.shape[-1] == filters:
        x = quantized(layers.Add(name=f"{prefix}add")([shortcut, x]), f"{prefix}add_quant", opts)
    return x


def classifier(x, num_classes, opts: Options):
    """The softmax classifier on pooled features [batch, channels]: a Dense named `predictions`
    (float32 under mixed precision, so probabilities come out float32; its kernel is float32 under
    float32 and mixed policies alike, so weights still copy by name); its per-tensor quantized twin
    (`quantize.QuantDense`) in a quantized twin."""
    dense = quantize.QuantDense if opts.quant is not None else layers.Dense
    extra = {"scheme": opts.quant} if opts.quant is not None else {}
    return dense(num_classes, activation="softmax", kernel_regularizer=opts.reg, dtype=head_dtype(),
                 name="predictions", **extra)(x)


def conv_with_bias(x, conv, opts: Options):
    """`conv` (a Conv2D with a bias and no batch norm after it, not yet called) applied to `x`; its
    quantized twin (per-channel kernel, no folding) in a quantized twin."""
    return (conv if opts.quant is None else quantize.quantized_conv(conv, None, opts.quant))(x)


def _uniform(values):
    """A float when all of `values` are equal (the layer's config stays a scalar), else a list."""
    return float(values[0]) if len(set(values)) == 1 else [float(v) for v in values]


def image_input(input_shape, opts: Options):
    """The model input, and the normalization the weights expect.

    With `opts.include_preprocessing` the model takes 0-255 pixels and maps them to
    `(pixels / 255 - mean) / std` in one `rescale` layer ([-1, 1] for the default 0.5 and 0.5,
    keras.applications' `x / 127.5 - 1`). Without it the model takes [-1, 1] pixels (what the input
    pipeline gives) and, for another mean and std, maps them in a `normalize` layer: every model
    takes the same input whatever its weights were trained with.

    The quantized twin quantizes its input at the entrance over fixed ranges: the 0-255 pixels
    (scale 1, what an int8 model's uint8 input holds), the scaling in two quantized steps (x times
    the scale, then plus the offset: an int8 MUL and ADD, where one Rescaling would leave both in
    float between the two quantizers), and the normalized pixels.

    Returns:
      (inputs, x): the `keras.Input` and the tensor the stem conv consumes.
    """
    mean, std = opts.mean, opts.std
    scale = [1.0 / (255.0 * s) for s in std]
    offset = [-m / s for m, s in zip(mean, std)]
    low, high = min(offset), max((1.0 - m) / s for m, s in zip(mean, std))
    inputs = keras.Input(shape=input_shape)
    x = inputs
    if opts.include_preprocessing and opts.quant is None:
        x = layers.Rescaling(_uniform(scale), offset=_uniform(offset), name="rescale")(x)
    elif opts.include_preprocessing:
        x = quantize.ActivationQuantizer(opts.quant, fixed_range=(0.0, 255.0), name="pixels_quant")(x)
        x = layers.Rescaling(_uniform(scale), name="rescale")(x)
        x = quantize.ActivationQuantizer(opts.quant, fixed_range=(0.0, 1.0 / min(std)), name="rescale_quant")(x)
        x = layers.Rescaling(1.0, offset=_uniform(offset), name="recenter")(x)
    elif (tuple(mean), tuple(std)) != (Options.mean, Options.std):
        # [-1, 1] -> (x + 1) / 2 in 0-1 units -> minus the mean, over the std.
        x = quantized(x, "pixels_quant", opts, fixed_range=(-1.0, 1.0))
        x = layers.Rescaling(_uniform([0.5 / s for s in std]), offset=_uniform([(0.5 - m) / s for m, s in zip(mean, std)]),
                             name="normalize")(x)
    return inputs, quantized(x, "input_quant", opts, fixed_range=(low, high))
