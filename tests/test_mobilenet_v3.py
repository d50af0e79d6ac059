"""MobileNetV3 through the exports without training: keras.applications' weight files, its quantized
twin converted to integer-only TFLite (hard-swish, squeeze-excite), and its ONNX model in ONNX
Runtime. Trained V3 runs (QAT, resume after SIGKILL, the int8 export of a QAT run) are in
test_qat.py; equivalence and sizes in test_models.py."""

import keras
import numpy as np
import pytest

from mobilenet_tf import onnx_export, tflite
from mobilenet_tf.models import quantize
from mobilenet_tf.models.build import build_model, copy_weights
from mobilenet_tf.models.pretrained import load_applications

from weights import assert_input_dependent, random_weights

SIZE = 64


@pytest.fixture(autouse=True)
def fresh_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _legacy_h5(model, path):
    """A weight file in the legacy h5 layout keras.applications publishes."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def hard_swishes(model) -> int:
    return sum(layer.name.endswith("_hard_swish") for layer in model.layers)


@pytest.mark.parametrize("name,minimalistic", [("mobilenet_v3_small", False), ("mobilenet_v3_large", True)])
def test_weight_files_load_with_and_without_the_top(name, minimalistic, tmp_path):
    """keras.applications' `weights_mobilenet_v3_*_224_*_float[_no_top_v2].h5` fill ours by layer
    name, at any input size and class count; the top file's `conv_2` too, its `logits` only at 1000
    classes."""
    application = {"mobilenet_v3_small": keras.applications.MobileNetV3Small,
                   "mobilenet_v3_large": keras.applications.MobileNetV3Large}[name]
    variant = f"{name[len('mobilenet_v3_'):]}{'_minimalistic' if minimalistic else ''}_224_1.0_float"
    reference = application(weights=None, minimalistic=minimalistic, input_shape=(224, 224, 3))
    random_weights(reference, name, seed=4)
    top, no_top = tmp_path / f"weights_mobilenet_v3_{variant}.h5", tmp_path / f"weights_mobilenet_v3_{variant}_no_top_v2.h5"
    _legacy_h5(reference, str(top))
    body = application(weights=None, minimalistic=minimalistic, input_shape=(224, 224, 3), include_top=False)
    for layer in body.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    _legacy_h5(body, str(no_top))

    for path, copied in ((top, ("conv_2",)), (no_top, ())):
        ours = build_model(name, minimalistic=minimalistic, image_size=96, num_classes=10)
        fresh = {layer: ours.get_layer(layer).get_weights()[0].copy() for layer in ("conv_2", "logits")}
        load_applications(ours, name, 1.0, str(path), minimalistic)
        for layer in ("conv", "expanded_conv_project", "expanded_conv_5_depthwise_bn", "conv_1", *copied):
            for a, b in zip(ours.get_layer(layer).get_weights(), reference.get_layer(layer).get_weights()):
                np.testing.assert_array_equal(a, b)
        for layer, kernel in fresh.items():
            if layer not in copied:
                np.testing.assert_array_equal(ours.get_layer(layer).get_weights()[0], kernel)
    # At 1000 classes the whole top is keras.applications' (which takes 0-255 pixels).
    same = build_model(name, minimalistic=minimalistic, num_classes=1000)
    load_applications(same, name, 1.0, str(top), minimalistic)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(same(x).numpy(), reference((x + 1) * 127.5).numpy(), atol=1e-5)


# Large has Small's blocks, more of them: slow, as the minimalistic variant (V2's kinds of ops).
@pytest.mark.parametrize("name,minimalistic", [
    ("mobilenet_v3_small", False), pytest.param("mobilenet_v3_large", False, marks=pytest.mark.slow),
    pytest.param("mobilenet_v3_small", True, marks=pytest.mark.slow)])
def test_quantized_twin_converts_to_integer_only_tflite(name, minimalistic, tmp_path):
    """Every op between the input's QUANTIZE and the output's DEQUANTIZE runs on int8, HARD_SWISH and
    squeeze-excite's MEAN, MUL and ADD included, with no calibration data: the twin's fake-quant
    ranges are all it takes."""
    kwargs = dict(alpha=0.75, minimalistic=minimalistic, image_size=SIZE, num_classes=10, dropout=0.0,
                  include_preprocessing=True)
    model = build_model(name, **kwargs)
    random_weights(model, name, seed=6)
    # Batch norm frozen from the first step, so the ranges learned are those inference meets.
    twin = build_model(name, **kwargs, quant=quantize.QuantScheme(freeze_bn_step=1))
    copy_weights(model, twin)
    pixels = np.random.default_rng(0).uniform(0, 255, (16, SIZE, SIZE, 3)).astype(np.float32)
    for _ in range(4):  # activation ranges from a few batches
        twin(pixels, training=True)
    flatbuffer = tflite.convert(twin, (SIZE, SIZE), ["int8"], quantized=True)["int8"]
    ops = tflite.op_types(flatbuffer)
    names = [op for op, _ in ops]
    assert ops[0] == ("QUANTIZE", "uint8") and ops[-1] == ("DEQUANTIZE", "int8")
    assert all(dtype == "int8" for _, dtype in ops[1:]), ops
    assert tflite.float_ops(flatbuffer) == []
    count = lambda kind: sum(type(layer) is kind for layer in twin.layers)  # noqa: E731
    assert names.count("CONV_2D") == count(quantize.QuantConv2D)
    assert names.count("DEPTHWISE_CONV_2D") == count(quantize.QuantDepthwiseConv2D)
    assert names.count("HARD_SWISH") == hard_swishes(twin) == (0 if minimalistic else {"mobilenet_v3_small": 19,
                                                                                      "mobilenet_v3_large": 21}[name])
    squeeze_excites = sum(layer.name.endswith("squeeze_excite_mul") for layer in twin.layers)
    assert squeeze_excites == (0 if minimalistic else {"mobilenet_v3_small": 9, "mobilenet_v3_large": 8}[name])
    # Each squeeze-excite: its pooling, the hard-sigmoid's ADD (ReLU6 fused) and MUL, and the gating MUL.
    assert names.count("MEAN") == squeeze_excites + 1
    assert names.count("MUL") == 2 * squeeze_excites + 1  # and the input scaling's
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(flatbuffer)
    int8 = tflite.LiteRTModel(str(path))(np.floor(pixels + 0.5))
    # Probabilities from the int8 softmax (its output step is 1/256). How close they come to the
    # twin's is measured on trained models (test_qat.py): this random twin's outputs hang on
    # near-ties that one rounding step per layer flips.
    assert int8.shape == (16, 10) and np.abs(int8.sum(axis=1) - 1).max() < 0.05


@pytest.mark.parametrize("name", ["mobilenet_v3_small", pytest.param("mobilenet_v3_large", marks=pytest.mark.slow)])
def test_onnx_runs_hard_swish_and_matches_keras(name, tmp_path):
    """tf2onnx's Add/Clip/Mul spelling of hard-swish becomes HardSwish (opset 14 on; HardSigmoid and
    Mul at 13) and squeeze-excite's gate HardSigmoid; ONNX Runtime gives Keras' probabilities."""
    model = build_model(name, alpha=0.75, image_size=SIZE, num_classes=10, include_preprocessing=True)
    random_weights(model, name, seed=5)
    pixels = np.random.default_rng(1).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    expected = model(pixels, training=False).numpy()
    assert_input_dependent(expected)
    for opset in (17, 13):
        proto = onnx_export.convert(model, (SIZE, SIZE), opset)
        ops = [node.op_type for node in proto.graph.node]
        fused = ops.count("HardSwish") if opset >= 14 else 0
        assert fused == (hard_swishes(model) if opset >= 14 else 0)
        assert ops.count("HardSigmoid") == (hard_swishes(model) - fused) + sum(
            layer.name.endswith("squeeze_excite_hard_sigmoid") for layer in model.layers)
        assert "Clip" not in ops
        path = tmp_path / f"model_{opset}.onnx"
        path.write_bytes(proto.SerializeToString())
        np.testing.assert_allclose(onnx_export.OnnxModel(str(path))(pixels), expected, rtol=0, atol=1e-4)
