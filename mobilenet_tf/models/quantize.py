"""Quantization-aware training: the fake-quantized twin of a MobileNet, as TFLite's int8 runs it.

The scheme is the published one (Jacob et al. 2018; Krishnamoorthi 2018; TFLite's int8 spec):

- Convolutions and depthwise convolutions fold their batch norm into the kernel and a bias, and
  fake-quantize the folded kernel per output channel, symmetric, narrow range ([-127, 127]).
  While batch norm trains, the kernel is folded with the moving statistics and the output
  corrected to the batch statistics (`sigma_moving / sigma_batch`, then the batch mean), so the
  forward pass normalizes as batch norm does and the moving statistics keep being learned; once
  it is frozen (`QuantScheme.freeze_bn_step`), the moving statistics alone, as at inference.
- The classifier's kernel is fake-quantized per tensor (the converter refuses per-channel Dense).
- Activations are fake-quantized per tensor after every ReLU6, linear bottleneck, Add, the
  pooling and the logits, with ranges learned as moving averages of each batch's min and max
  until `QuantScheme.freeze_range_step`; the input at the model's entrance with fixed ranges.

Every layer keeps the name and the weights of its float twin (the batch norm layers keep theirs and
become identities, their convolution doing the work), so float checkpoints, keras.applications
weights and `copy_weights` keep working; the quantizers add weights (ranges and step counters)
that float models lack, which `copy_weights` leaves as they are. The TFLite converter reads the
fake-quant ops: with `optimizations=[DEFAULT]` and no calibration data, every convolution,
depthwise convolution, add, mean, fully-connected and softmax runs in int8.
"""

from __future__ import annotations

import dataclasses
import weakref

import keras
import tensorflow as tf
from keras import layers

# Weights that only quantized twins hold: a float source has none of them to copy.
STATE_WEIGHTS = ("min", "max", "step")


@dataclasses.dataclass(frozen=True)
class QuantScheme:
    """When the quantization statistics stop moving. 0 for a step: never (TF Model Garden's QAT,
    through tensorflow-model-optimization, keeps both moving to the end)."""

    freeze_bn_step: int = 0  # from this training step on, batch norm uses its moving statistics
    freeze_range_step: int = 0  # from this training step on, activation ranges stay as they are
    ema_decay: float = 0.999  # activation ranges: moving average of each batch's min and max


def _frozen(step, at: int):
    return tf.constant(False) if not at else step >= at


def _add_step(layer: layers.Layer):
    return layer.add_weight(name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
                            aggregation="only_first_replica")


def symmetric_fake_quant(kernel, axis=None):
    """Fake-quantize weights to int8, symmetric and narrow range ([-127, 127], zero point 0), per
    tensor or per slice along `axis` (the converter's per-channel weight scheme)."""
    reduce = None if axis is None else [i for i in range(kernel.shape.rank) if i != axis % kernel.shape.rank]
    bound = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=reduce), 1e-8)
    return keras.quantizers.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8, narrow_range=True,
                                                         axis=axis)


@keras.saving.register_keras_serializable("mobilenet_tf")
class ActivationQuantizer(layers.Layer):
    """Fake-quantizes its input per tensor to 8 bits over a learned [min, max] (always holding 0),
    or over `fixed_range` (then it has no weights)."""

    def __init__(self, scheme: QuantScheme = QuantScheme(), fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        self.scheme = scheme
        self.fixed_range = tuple(fixed_range) if fixed_range else None

    def build(self, input_shape):
        if self.fixed_range is None:
            self.min = self.add_weight(name="min", shape=(), initializer="zeros", trainable=False, aggregation="mean")
            self.max = self.add_weight(name="max", shape=(), initializer="zeros", trainable=False, aggregation="mean")
            self.step = _add_step(self)

    def call(self, inputs, training=None):
        if self.fixed_range is not None:
            low, high = self.fixed_range
            return keras.quantizers.fake_quant_with_min_max_vars(inputs, low, high, num_bits=8)
        if training:
            batch_min = tf.stop_gradient(tf.reduce_min(tf.cast(inputs, tf.float32)))
            batch_max = tf.stop_gradient(tf.reduce_max(tf.cast(inputs, tf.float32)))
            decay = self.scheme.ema_decay
            first = tf.equal(self.step, 0)
            update = tf.logical_not(_frozen(self.step, self.scheme.freeze_range_step))
            moved_min = tf.where(first, batch_min, decay * self.min + (1.0 - decay) * batch_min)
            moved_max = tf.where(first, batch_max, decay * self.max + (1.0 - decay) * batch_max)
            # The range always holds 0 (zero padding must be exact) and is never empty.
            self.min.assign(tf.where(update, tf.minimum(moved_min, 0.0), self.min))
            self.max.assign(tf.where(update, tf.maximum(moved_max, 1e-6), self.max))
            self.step.assign_add(1)
        # The variables themselves: frozen into constants, they are what the converter reads.
        return keras.quantizers.fake_quant_with_min_max_vars(inputs, self.min, self.max, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "scheme": dataclasses.asdict(self.scheme), "fixed_range": self.fixed_range}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "scheme": QuantScheme(**config["scheme"])})


@keras.saving.register_keras_serializable("mobilenet_tf")
class QuantHardSigmoid(layers.Layer):
    """relu6(x + 3) / 6 as TFLite's int8 kernels run it: an ADD with a fused ReLU6, then a MUL by
    1/6, each output fake-quantized over its fixed range ([0, 6], then [0, 1]). The input must be
    fake-quantized already."""

    def call(self, inputs):
        shifted = tf.nn.relu6(inputs + 3.0)
        shifted = keras.quantizers.fake_quant_with_min_max_vars(shifted, 0.0, 6.0, num_bits=8)
        return keras.quantizers.fake_quant_with_min_max_vars(shifted * (1.0 / 6.0), 0.0, 1.0, num_bits=8)


@keras.saving.register_keras_serializable("mobilenet_tf")
class QuantBatchNormalization(layers.BatchNormalization):
    """A batch norm with no convolution before it to fold into (MobileNet V4's attention blocks), as
    TFLite's int8 ops run it at inference: `x * scale` (an int8 MUL, its product fake-quantized over
    a learned range) `+ offset` (an int8 ADD; the caller quantizes the sum). While it trains it
    normalizes with the batch's statistics, as batch norm does, and the product's range follows
    the moving statistics'."""

    def __init__(self, *args, scheme: QuantScheme = QuantScheme(), **kwargs):
        super().__init__(*args, **kwargs)
        self.scheme = scheme
        self.product = ActivationQuantizer(scheme, name="product_quant")

    def build(self, input_shape):
        super().build(input_shape)
        self.product.build(input_shape)

    def call(self, inputs, training=None, mask=None):
        scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        offset = self.beta - self.moving_mean * scale
        if training and self.trainable:
            self.product(inputs * scale, training=True)  # learns the range; the output normalizes by the batch
            return super().call(inputs, training=True, mask=mask)
        return self.product(inputs * scale) + offset

    def get_config(self):
        return {**super().get_config(), "scheme": dataclasses.asdict(self.scheme)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "scheme": QuantScheme(**config["scheme"])})


@keras.saving.register_keras_serializable("mobilenet_tf")
class FoldedBatchNormalization(layers.BatchNormalization):
    """A batch norm folded into the convolution before it (`QuantConv2D`, `QuantDepthwiseConv2D`):
    it keeps its name and weights, which that convolution reads and updates, and passes its input
    through."""

    def call(self, inputs, training=None, mask=None):
        return inputs


class _FoldedConv:
    """What QuantConv2D and QuantDepthwiseConv2D share: BN folding and per-channel kernel fake-quant.

    `self._norm()` is the FoldedBatchNormalization after this convolution (None: no batch norm,
    e.g. V1's classifier, which has a bias instead).
    """

    # The kernel axis of the output channels: Conv2D [kh, kw, in, out], depthwise [kh, kw, in, 1].
    channel_axis = -1

    def _bind(self, norm, scheme: QuantScheme):
        # A weak reference: a tracked attribute would make the batch norm's weights this layer's.
        self._norm = weakref.ref(norm) if norm is not None else lambda: None
        self.scheme = scheme

    def build(self, input_shape):
        super().build(input_shape)
        self.step = _add_step(self)
        norm = self._norm()
        if norm is not None and not norm.built:
            norm.build(self.compute_output_shape(input_shape))

    def _convolve(self, inputs, kernel):
        raise NotImplementedError

    def _per_channel(self, kernel):
        """The kernel as [..., channels] (its output channels last)."""
        return kernel

    def _from_per_channel(self, kernel):
        return kernel

    def _scale_kernel(self, scale):
        """The kernel with each output channel multiplied by `scale` [channels]."""
        return self._from_per_channel(self._per_channel(self.kernel) * scale)

    def _quantized(self, kernel):
        flat = self._per_channel(kernel)
        return self._from_per_channel(symmetric_fake_quant(flat, axis=-1))

    def call(self, inputs, training=None):
        norm = self._norm()
        if norm is None:
            outputs = self._convolve(inputs, self._quantized(self.kernel))
            return outputs + self.bias if self.use_bias else outputs
        gamma, beta = norm.gamma, norm.beta
        moving_sigma = tf.sqrt(norm.moving_variance + norm.epsilon)
        bn_trains = bool(training) and norm.trainable
        if training:
            self.step.assign_add(1)
        folded = self._convolve(inputs, self._quantized(self._scale_kernel(gamma / moving_sigma)))

        def moving_statistics():
            return folded + (beta - gamma * norm.moving_mean / moving_sigma)

        if not bn_trains:
            return moving_statistics()

        def batch_statistics():
            # Batch norm still trains: the statistics of the float convolution, as batch norm sees them.
            mean, variance = tf.nn.moments(self._convolve(inputs, self.kernel), axes=[0, 1, 2])
            for moving, batch in ((norm.moving_mean, mean), (norm.moving_variance, variance)):
                moving.assign(moving * norm.momentum + tf.stop_gradient(batch) * (1.0 - norm.momentum))
            sigma = tf.sqrt(variance + norm.epsilon)
            return folded * (moving_sigma / sigma) + (beta - gamma * mean / sigma)

        frozen = _frozen(self.step, self.scheme.freeze_bn_step)
        return tf.cond(frozen, moving_statistics, batch_statistics)

    def get_config(self):
        return {**super().get_config(), "scheme": dataclasses.asdict(self.scheme)}


@keras.saving.register_keras_serializable("mobilenet_tf")
class QuantConv2D(_FoldedConv, layers.Conv2D):
    def __init__(self, *args, norm=None, scheme: QuantScheme = QuantScheme(), **kwargs):
        super().__init__(*args, **kwargs)
        self._bind(norm, scheme)

    def _convolve(self, inputs, kernel):
        return tf.nn.conv2d(inputs, kernel, strides=self.strides, padding=self.padding.upper(),
                            dilations=self.dilation_rate)


@keras.saving.register_keras_serializable("mobilenet_tf")
class QuantDepthwiseConv2D(_FoldedConv, layers.DepthwiseConv2D):
    def __init__(self, *args, norm=None, scheme: QuantScheme = QuantScheme(), **kwargs):
        super().__init__(*args, **kwargs)
        self._bind(norm, scheme)

    # [kh, kw, in, 1] <-> [kh, kw, 1, in]: the converter takes per-channel fake-quant on the last
    # axis of the latter view (on the former's axis 2 it fails to match the TFLite kernel's axis).
    def _per_channel(self, kernel):
        return tf.reshape(kernel, [*kernel.shape[:2], 1, kernel.shape[2]])

    def _from_per_channel(self, kernel):
        return tf.reshape(kernel, [*kernel.shape[:2], kernel.shape[3], 1])

    def _convolve(self, inputs, kernel):
        return tf.nn.depthwise_conv2d(inputs, kernel, strides=(1, *self.strides, 1), padding=self.padding.upper(),
                                      dilations=self.dilation_rate)


@keras.saving.register_keras_serializable("mobilenet_tf")
class QuantDense(layers.Dense):
    """The classifier: per-tensor fake-quantized kernel, fake-quantized logits, then its activation."""

    def __init__(self, *args, scheme: QuantScheme = QuantScheme(), **kwargs):
        activation = kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.final_activation = keras.activations.get(activation)
        self.scheme = scheme
        self.logits = ActivationQuantizer(scheme, name="logits_quant")

    def build(self, input_shape):
        super().build(input_shape)
        self.logits.build((None, self.units))

    def call(self, inputs, training=None):
        logits = tf.matmul(inputs, symmetric_fake_quant(self.kernel))
        if self.use_bias:
            logits += self.bias
        return self.final_activation(self.logits(logits, training=training))

    def get_config(self):
        return {**super().get_config(), "activation": keras.activations.serialize(self.final_activation),
                "scheme": dataclasses.asdict(self.scheme)}


def quantized_conv(conv: layers.Layer, norm, scheme: QuantScheme) -> layers.Layer:
    """The quantized twin of a Conv2D or DepthwiseConv2D (same name and config), folding `norm`."""
    cls = QuantDepthwiseConv2D if isinstance(conv, layers.DepthwiseConv2D) else QuantConv2D
    return cls(**conv.get_config(), norm=norm, scheme=scheme)
