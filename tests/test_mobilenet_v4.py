"""MobileNet V4-Conv: sizes and costs against timm's published counts, each Universal Inverted
Bottleneck form against a plain TensorFlow computation of the paper's block, stochastic depth, and
the quantized twin to integer-only TFLite and the model to ONNX Runtime. Training, resume after
SIGKILL and QAT of V4 are in test_qat.py and test_training.py."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import onnx_export, tflite
from mobilenet_tf.models import quantize
from mobilenet_tf.models.build import build_model, copy_weights, count_macs
from mobilenet_tf.models.layers import Options
from mobilenet_tf.models.mobilenet_v4 import (
    StochasticDepth,
    _fused_inverted_bottleneck,
    _universal_inverted_bottleneck,
    fused_ib,
    uib,
)

from weights import assert_input_dependent, random_weights, randomize

# At their default sizes (224, 256, 384), 1000 classes: trainable parameters (timm counts no batch
# norm statistics: 3.77M, 9.72M and 32.59M on its model cards' comparison tables), all parameters
# (Keras' count_params), and multiply-accumulates of the convolutions and the classifier. timm's
# GMACs (0.19, 1.1, 6.43) add 2 for every element of every convolution's output, its profiler's
# count of the batch norm there (the "Activations (M)" its cards give: 2.0, 7.6, 27.3):
# 0.186 + 2 x 0.00196 = 0.190, 1.080 + 2 x 0.00758 = 1.095, 6.376 + 2 x 0.0273 = 6.431. The
# paper's Table 6 (3.8M / 0.2G, 9.2M / 1.0G, 31M / 5.9G) rounds S to ours and gives M and L below
# both Model Garden's and timm's builds of the same block tables.
SIZES = {
    "mobilenet_v4_conv_small": (224, 3_774_024, 3_799_112, 186_005_568, 1_964_416),
    "mobilenet_v4_conv_medium": (256, 9_715_512, 9_783_416, 1_080_244_224, 7_578_880),
    "mobilenet_v4_conv_large": (384, 32_590_864, 32_740_416, 6_376_220_672, 27_308_288),
}
TIMM = {"mobilenet_v4_conv_small": (3.77, 0.19), "mobilenet_v4_conv_medium": (9.72, 1.1),
        "mobilenet_v4_conv_large": (32.59, 6.43)}


@pytest.fixture(autouse=True)
def fresh_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


@pytest.mark.parametrize("name", sorted(SIZES))
def test_params_and_macs_are_timms(name):
    size, trainable, total, macs, activations = SIZES[name]
    model = build_model(name, image_size=size)
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == trainable
    assert model.count_params() == total
    assert count_macs(model) == macs
    convolved = sum(math.prod(layer.output.shape[1:]) for layer in model.layers
                    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))
    assert convolved == activations
    params, gmacs = TIMM[name]
    assert round(trainable / 1e6, 2) == params
    assert (macs + 2 * activations) / 1e9 == pytest.approx(gmacs, abs=0.005)


def _reference_block(model, x, block, prefix):
    """The paper's block computed with plain TensorFlow ops from the layers' weights: depthwise and
    pointwise convolutions, batch norm from its moving statistics, ReLU where the block has one."""

    def bn(y, name):
        gamma, beta, mean, variance = model.get_layer(name).get_weights()
        return (y - mean) / np.sqrt(variance + model.get_layer(name).epsilon) * gamma + beta

    def depthwise(y, name, stride):
        (kernel,) = model.get_layer(name).get_weights()
        return tf.nn.depthwise_conv2d(y, kernel, [1, stride, stride, 1], "SAME").numpy()

    def pointwise(y, name, stride=1):
        (kernel,) = model.get_layer(name).get_weights()
        return tf.nn.conv2d(y, kernel, stride, "SAME").numpy()

    relu = lambda y: np.maximum(y, 0)  # noqa: E731
    y = x
    if block.kind == "fused":
        y = relu(bn(pointwise(y, f"{prefix}fused", block.stride), f"{prefix}fused_bn"))
    else:
        if block.start:
            y = bn(depthwise(y, f"{prefix}start_dw", 1 if block.middle else block.stride), f"{prefix}start_dw_bn")
        y = relu(bn(pointwise(y, f"{prefix}expand"), f"{prefix}expand_bn"))
        if block.middle:
            y = relu(bn(depthwise(y, f"{prefix}middle_dw", block.stride), f"{prefix}middle_dw_bn"))
    y = bn(pointwise(y, f"{prefix}project"), f"{prefix}project_bn")
    return y + x if block.stride == 1 and x.shape[-1] == y.shape[-1] else y


@pytest.mark.parametrize("block", [
    uib(5, 5, 1, 24, 3.0), uib(3, 5, 2, 32, 4.0),  # ExtraDW, the stride on the middle one
    uib(0, 3, 1, 24, 2.0), uib(0, 5, 2, 32, 6.0),  # IB
    uib(3, 0, 1, 24, 4.0), uib(5, 0, 2, 32, 4.0),  # ConvNext-like, the stride on the start one
    uib(0, 0, 1, 24, 2.0),  # FFN
    fused_ib(3, 2, 32, 4.0), fused_ib(3, 1, 24, 4.0),
], ids=["extra_dw", "extra_dw_s2", "ib", "ib_s2", "convnext", "convnext_s2", "ffn", "fused_s2", "fused"])
def test_each_block_form_is_the_papers(block):
    inputs = keras.Input((15, 15, 24))
    build = _fused_inverted_bottleneck if block.kind == "fused" else _universal_inverted_bottleneck
    model = keras.Model(inputs, build(inputs, block, block.filters, "b_", Options(), 0.0))
    x = np.random.default_rng(0).normal(size=(2, 15, 15, 24)).astype(np.float32)
    randomize(model, seed=1, gain=1.0, images=x)
    expected = _reference_block(model, x, block, "b_")
    actual = model(x, training=False).numpy()
    side = math.ceil(15 / block.stride)  # 'same' padding
    assert actual.shape == (2, side, side, block.filters)
    assert_input_dependent(actual)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    names = {layer.name for layer in model.layers}
    kinds = {"start_dw": block.start, "middle_dw": block.middle, "fused": block.kind == "fused"}
    for part, present in kinds.items():
        assert (f"b_{part}" in names) == bool(present), part


def test_stochastic_depth_drops_whole_examples_while_training():
    layer = StochasticDepth(0.4, seed=3)
    x = tf.ones((4000, 2, 2, 3))
    y = layer(x, training=True).numpy()
    kept = y.reshape(4000, -1)
    assert np.allclose(np.unique(kept), [0.0, 1 / 0.6]) and np.all(kept.min(1) == kept.max(1))  # whole examples
    assert abs((kept[:, 0] == 0).mean() - 0.4) < 0.03 and abs(y.mean() - 1.0) < 0.05  # unbiased
    np.testing.assert_array_equal(layer(x, training=False), x)
    model = build_model("mobilenet_v4_conv_small", image_size=64, num_classes=10, stochastic_depth=0.2)
    rates = [layer.rate for layer in model.layers if isinstance(layer, StochasticDepth)]
    # Model Garden's rate of spec row i: 0.2 (i + 1) / (rows + 3): growing, below 0.2 after the last row.
    assert rates == sorted(rates) and 0 < rates[0] < rates[-1] < 0.2 and len(rates) == 10  # the residual blocks
    with pytest.raises(ValueError, match="has no stochastic depth"):
        build_model("mobilenet_v2", stochastic_depth=0.1)


def test_quantized_twin_converts_to_integer_only_tflite():
    kwargs = dict(image_size=64, num_classes=10, dropout=0.0, include_preprocessing=True)
    model = build_model("mobilenet_v4_conv_small", **kwargs)
    random_weights(model, "mobilenet_v4_conv_small", seed=6)
    twin = build_model("mobilenet_v4_conv_small", **kwargs, quant=quantize.QuantScheme(freeze_bn_step=1))
    copy_weights(model, twin)
    pixels = np.random.default_rng(0).uniform(0, 255, (16, 64, 64, 3)).astype(np.float32)
    for _ in range(4):
        twin(pixels, training=True)
    flatbuffer = tflite.convert(twin, (64, 64), ["int8"], quantized=True)["int8"]
    ops = tflite.op_types(flatbuffer)
    names = [op for op, _ in ops]
    assert ops[0] == ("QUANTIZE", "uint8") and ops[-1] == ("DEQUANTIZE", "int8")
    assert all(dtype == "int8" for _, dtype in ops[1:]), ops
    count = lambda kind: sum(type(layer) is kind for layer in twin.layers)  # noqa: E731
    assert names.count("CONV_2D") == count(quantize.QuantConv2D) == 31  # stem, 4 convs, 12 x 2 in the UIBs, head
    assert names.count("DEPTHWISE_CONV_2D") == count(quantize.QuantDepthwiseConv2D) == 15
    assert names.count("ADD") == sum(layer.name.endswith("_add") for layer in twin.layers) + 1  # and the input's
    assert "FULLY_CONNECTED" in names


def test_hybrid_quantized_twin_runs_attention_on_int8():
    """V4-Hybrid-L's quantized twin converts to a TFLite model whose every op takes int8: the
    attention's batch matmuls and softmax (Medium's are the same blocks), its batch norm (a MUL and
    an ADD), layer scale and the exact GELU included."""
    name = "mobilenet_v4_hybrid_large"
    kwargs = dict(alpha=0.5, image_size=64, num_classes=10, dropout=0.0, include_preprocessing=True)
    model = build_model(name, **kwargs)
    random_weights(model, name, seed=6)
    twin = build_model(name, **kwargs, quant=quantize.QuantScheme(freeze_bn_step=1))
    copy_weights(model, twin)
    pixels = np.random.default_rng(0).uniform(0, 255, (16, 64, 64, 3)).astype(np.float32)
    for _ in range(4):
        twin(pixels, training=True)
    ops = tflite.op_types(tflite.convert(twin, (64, 64), ["int8"], quantized=True)["int8"])
    names = [op for op, _ in ops]
    assert ops[0] == ("QUANTIZE", "uint8") and ops[-1] == ("DEQUANTIZE", "int8")
    assert all(dtype == "int8" for _, dtype in ops[1:]), sorted(set(ops))
    attention = sum(layer.name.endswith("_attention") for layer in twin.layers)
    assert attention == 8 and names.count("BATCH_MATMUL") == 2 * attention and names.count("SOFTMAX") == attention + 1
    assert "GELU" in names


@pytest.mark.parametrize("name", ["mobilenet_v4_conv_small", "mobilenet_v4_hybrid_medium", "mobilenet_v4_hybrid_large"])
def test_onnx_matches_keras(name, tmp_path):
    """ONNX Runtime gives Keras' probabilities, the hybrids' attention (batch matmuls, softmax,
    reshapes) and Hybrid-L's exact GELU (erfc, which ONNX lacks, as 1 - erf) included."""
    alpha = 0.5 if "large" in name else 1.0
    model = build_model(name, alpha=alpha, image_size=64, num_classes=10, include_preprocessing=True)
    random_weights(model, name, seed=5)
    pixels = np.random.default_rng(1).uniform(0, 255, (5, 64, 64, 3)).astype(np.float32)
    expected = model(pixels, training=False).numpy()
    assert_input_dependent(expected)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_export.convert(model, (64, 64)).SerializeToString())
    np.testing.assert_allclose(onnx_export.OnnxModel(str(path))(pixels), expected, rtol=0, atol=1e-4)
