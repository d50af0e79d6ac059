"""Quantization-aware training: the fake-quantized twin, trained by `mobilenet-train --qat` from a
float run, exported to an int8 TFLite model whose every compute op runs on int8 tensors with the
ranges training learned, and agreeing with the SavedModel that serves the twin."""

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import export, tflite
from mobilenet_tf.checkpoint import restore_model
from mobilenet_tf.models import MODEL_NAMES, quantize
from mobilenet_tf.models.build import build_model, copy_weights

from clis import checkpoint_tensors, cli, env_for, one_error_line, run, run_until
from images import held_out_pixels

SHORT = ["--alpha=0.35", "--log_steps=0"]
# The tests on a trained QAT run share its ~2 minutes of training and export: slow, so the default
# suite stays near 15 minutes; CI runs them.
QAT_RUN = pytest.mark.slow


def learned_quantizers(model):
    """The activation quantizers with learned ranges, in the model's order (the classifier's last)."""
    found = [layer for layer in model.layers
             if isinstance(layer, quantize.ActivationQuantizer) and layer.fixed_range is None]
    return found + [layer.logits for layer in model.layers if isinstance(layer, quantize.QuantDense)]


def test_twin_has_the_float_models_layers_and_copies_both_ways():
    scheme = quantize.QuantScheme()
    for name in MODEL_NAMES:
        float_model = build_model(name, alpha=0.5, image_size=32, num_classes=7)
        twin = build_model(name, alpha=0.5, image_size=32, num_classes=7, quant=scheme)
        float_layers = {layer.name: [w.shape for w in layer.weights] for layer in float_model.layers if layer.weights}
        for layer in twin.layers:
            if not layer.weights:
                continue
            if layer.name in float_layers:  # same weights, quantization state added
                shapes = [w.shape for w in layer.weights if w.path.rsplit("/", 1)[-1] not in quantize.STATE_WEIGHTS]
                assert shapes == float_layers[layer.name], layer.name
            else:
                assert isinstance(layer, quantize.ActivationQuantizer), layer.name
        assert set(float_layers) <= {layer.name for layer in twin.layers}
        copy_weights(float_model, twin)
        back = build_model(name, alpha=0.5, image_size=32, num_classes=7)
        copy_weights(twin, back)
        for a, b in zip(float_model.weights, back.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_folding_normalizes_as_batch_norm_and_quantizes_per_channel():
    """Training mode: the folded conv normalizes with the batch's statistics (as batch norm) and
    moves the moving ones; inference: the moving ones. Kernels land on int8 grids per channel."""
    rng = np.random.default_rng(0)
    scheme = quantize.QuantScheme(freeze_bn_step=3)
    float_model = build_model("mobilenet_v2", alpha=0.35, image_size=32, num_classes=10)
    twin = build_model("mobilenet_v2", alpha=0.35, image_size=32, num_classes=10, quant=scheme)
    for layer in float_model.layers:  # non-trivial batch norms
        if layer.name.endswith(("_BN", "_bn")):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape))
    copy_weights(float_model, twin)
    x = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    conv, norm = twin.get_layer("Conv1"), twin.get_layer("bn_Conv1")
    stem = keras.Model(twin.input, twin.get_layer("bn_Conv1").output)
    float_stem = keras.Model(float_model.input, float_model.get_layer("bn_Conv1").output)
    before = norm.moving_mean.numpy().copy()
    trained = stem(x, training=True).numpy()
    # Batch statistics of the output, as batch norm gives them (up to int8 weight rounding).
    np.testing.assert_allclose(trained.mean(axis=(0, 1, 2)), norm.beta.numpy(), atol=0.02)
    np.testing.assert_allclose(trained.std(axis=(0, 1, 2)), np.abs(norm.gamma.numpy()), rtol=0.05)
    assert not np.allclose(norm.moving_mean.numpy(), before)
    # Inference: the float model's moving-statistics batch norm, up to the weight quantization.
    copy_weights(twin, float_model)
    inferred, reference = stem(x, training=False).numpy(), float_stem(x, training=False).numpy()
    assert np.abs(inferred - reference).max() < 0.05 * np.abs(reference).max()
    # Frozen after 3 training steps: the moving statistics stop moving.
    stem(x, training=True)
    frozen_mean = norm.moving_mean.numpy().copy()
    stem(x, training=True)
    np.testing.assert_array_equal(norm.moving_mean.numpy(), frozen_mean)
    assert int(conv.step.numpy()) == 3
    # The folded kernel is an int8 grid per output channel: 255 levels at most, symmetric.
    sigma = np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    folded = conv.kernel.numpy() * norm.gamma.numpy() / sigma
    grid = quantize.symmetric_fake_quant(tf.constant(folded), axis=-1).numpy()
    for c in range(grid.shape[-1]):
        step = np.abs(folded[..., c]).max() / 127
        np.testing.assert_allclose(grid[..., c] / step, np.round(grid[..., c] / step), atol=1e-3)


# The families whose quantized twins differ: V2 (ReLU6, adds) and V3 (hard-swish, squeeze-excite).
MODELS = ["mobilenet_v2", "mobilenet_v3_small"]
EACH_MODEL = pytest.mark.parametrize("qat_run", MODELS, indirect=True)


def qat_flags(root, model):
    """A two-epoch deterministic QAT fine-tune of the float run in `root`, checkpointing every 6 steps,
    with batch norm and the ranges frozen on the way (steps 50 and 60 of 88)."""
    return [*SHORT, f"--model={model}", "--epochs=2", "--qat", f"--init_checkpoint={root / 'float'}",
            "--deterministic", "--checkpoint_steps=6", "--log_steps=4", "--qat_freeze_bn_steps=50",
            "--qat_freeze_range_steps=60"]


@pytest.fixture(scope="module")
def qat_run(request, tmp_path_factory, cache_dir):
    """A short float run of the model `request.param` names, a QAT fine-tune from it (`qat_flags`),
    and its int8 export."""
    root = tmp_path_factory.mktemp(f"qat_{request.param}")
    float_run = run("train", *SHORT, f"--model={request.param}", "--epochs=2", f"--model_dir={root / 'float'}",
                    cache_dir=cache_dir)
    assert float_run.returncode == 0, float_run.stderr[-3000:]
    qat = run("train", *qat_flags(root, request.param), f"--model_dir={root / 'qat'}", cache_dir=cache_dir)
    assert qat.returncode == 0, qat.stderr[-3000:]
    exported = run("export", f"--model_dir={root / 'qat'}", "--tflite=int8,float32", "--onnx", cache_dir=cache_dir)
    assert exported.returncode == 0, exported.stderr[-3000:]
    return root


@QAT_RUN
@EACH_MODEL
def test_int8_model_runs_every_compute_op_on_int8(qat_run):
    flatbuffer = (qat_run / "qat" / "export" / "tflite" / "model_int8.tflite").read_bytes()
    ops = tflite.op_types(flatbuffer)
    names = [name for name, _ in ops]
    model, _ = restore_model(str(qat_run / "qat"))
    count = lambda kind: sum(type(layer) is kind for layer in model.layers)  # noqa: E731
    assert names.count("CONV_2D") == count(quantize.QuantConv2D)  # V2: 35, V3-Small: 43 with its SE convs
    assert names.count("DEPTHWISE_CONV_2D") == count(quantize.QuantDepthwiseConv2D)
    assert names.count("HARD_SWISH") == sum(layer.name.endswith("_hard_swish") for layer in model.layers)
    if "v3" in model.name:  # squeeze-excite: its multiplies and hard-sigmoids
        assert names.count("HARD_SWISH") == 19 and names.count("MUL") > names.count("MEAN") > 1
    else:
        assert names.count("CONV_2D") == 35 and "FULLY_CONNECTED" in names
    assert {"ADD", "MEAN", "SOFTMAX"} <= set(names)
    assert ops[0] == ("QUANTIZE", "uint8") and ops[-1] == ("DEQUANTIZE", "int8")
    assert all(dtype == "int8" for _, dtype in ops[1:]), ops
    assert tflite.float_ops(flatbuffer) == []
    info = json.loads((qat_run / "qat" / "export" / "tflite" / "model_info.json").read_text())
    assert info["int8"] == "quantization-aware training"
    runner = tflite.LiteRTModel(str(qat_run / "qat" / "export" / "tflite" / "model_int8.tflite"))
    assert runner.input["dtype"] == np.uint8 and tuple(runner.input["quantization"]) == (1.0, 0)


@QAT_RUN
@EACH_MODEL
def test_int8_scales_are_the_ranges_in_the_checkpoint(qat_run):
    """Each activation's scale and zero point in the .tflite are those of the range the QAT
    checkpoint holds, after the zero-point nudging that FakeQuant and the converter both apply."""
    from ai_edge_litert.interpreter import Interpreter

    model, _ = restore_model(str(qat_run / "qat"))
    quantizers = learned_quantizers(model)
    interpreter = Interpreter(model_path=str(qat_run / "qat" / "export" / "tflite" / "model_int8.tflite"))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    outputs = [tensors[op["outputs"][0]] for op in interpreter._get_ops_details()
               if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN", "FULLY_CONNECTED",
                                    "HARD_SWISH")]
    # Not learned: the input scaling's and the hard-sigmoid's fixed ranges.
    outputs = [t for t in outputs if not any(fixed in t["name"] for fixed in ("rescale", "recenter", "hard_sigmoid"))]
    assert len(quantizers) == (35 + 17 + 10 + 2 if "v2" in model.name else 99)

    def params(quantizer):
        low, high = float(quantizer.min.numpy()), float(quantizer.max.numpy())
        assert low <= 0 < high
        scale = (high - low) / 255
        return scale, int(np.round(-low / scale)) - 128

    # In order, each op's output quantized as its quantizer says. The converter drops only the
    # means of one value: V3's poolings of 1x1 maps (at 32x32, its last stage: 3 squeeze-excites
    # and the head).
    expected, dropped = iter(quantizers), []
    for tensor in outputs:
        for quantizer in expected:
            scale, zero_point = params(quantizer)
            if tensor["quantization"][0] == pytest.approx(scale, rel=1e-5) and tensor["quantization"][1] == zero_point:
                break
            dropped.append(quantizer.name)
        else:
            pytest.fail(f"{tensor['name']}: {tensor['quantization']} is no quantizer's range")
    dropped += [quantizer.name for quantizer in expected]
    assert dropped == ([] if "v2" in model.name else
                       ["expanded_conv_8_squeeze_excite_avg_pool_quant", "expanded_conv_9_squeeze_excite_avg_pool_quant",
                        "expanded_conv_10_squeeze_excite_avg_pool_quant", "avg_pool_quant"])


@QAT_RUN
@EACH_MODEL
def test_qat_export_serves_the_twin_and_int8_agrees(qat_run, cache_dir):
    """The SavedModel answers what QAT evaluated (its fake-quantized twin) and the int8 model
    agrees with it; the float32 TFLite model is the float model underneath."""
    model, cfg = restore_model(str(qat_run / "qat"))
    pixels, _ = held_out_pixels(cache_dir, cfg.model.image_size, count=120)
    pixels = np.floor(pixels + 0.5)  # uint8, as the int8 model takes them (FakeQuant rounds half up)
    served = tf.saved_model.load(str(qat_run / "qat" / "export" / "2")).signatures["serving_pixels"]
    probabilities = served(pixels=tf.constant(pixels))["probabilities"].numpy()
    twin = export.serving_model(model, cfg)
    np.testing.assert_allclose(probabilities, twin(pixels, training=False).numpy(), atol=1e-6)
    assert any(isinstance(layer, quantize.QuantConv2D) for layer in twin.layers)
    int8 = tflite.LiteRTModel(str(qat_run / "qat" / "export" / "tflite" / "model_int8.tflite"))(pixels)
    # An undertrained model (~0.4 top-1, flat probabilities): integer rounding, one step per layer,
    # flips some near-ties (measured: 88% same top-1, probabilities 0.01 apart on average); the
    # digits recipe's model agrees on >= 99% (test_digits_recipe_qat_int8_matches_float).
    assert np.mean(np.argmax(int8, 1) == np.argmax(probabilities, 1)) >= 0.8
    assert np.abs(int8 - probabilities).mean() < 0.03
    float32 = tflite.LiteRTModel(str(qat_run / "qat" / "export" / "tflite" / "model_float32.tflite"))(pixels)
    float_model = export.serving_model(model, cfg, quantized=False)
    assert not any(isinstance(layer, quantize.QuantConv2D) for layer in float_model.layers)
    np.testing.assert_allclose(float32, float_model(pixels, training=False).numpy(), atol=1e-4)


@QAT_RUN
@EACH_MODEL
def test_qat_onnx_is_quantize_dequantize_pairs(qat_run, cache_dir, tmp_path):
    """tf2onnx turns the fake-quant ops into QuantizeLinear/DequantizeLinear pairs with the
    checkpoint's scales and zero points: run as written (ONNX Runtime's graph optimizations off),
    the graph computes what the SavedModel computes. Optimized, ONNX Runtime fuses the pairs into
    integer kernels, which round differently."""
    import onnx
    import onnxruntime

    from mobilenet_tf import onnx_export

    path = qat_run / "qat" / "export" / "onnx" / "model.onnx"
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    model, cfg = restore_model(str(qat_run / "qat"))
    # Every learned activation range (V2: 64, V3-Small: 99), the fixed ones and the kernels.
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") >= len(learned_quantizers(model)) + 2
    # V3's hard-swish, fake-quantized before and after it: one HardSwish between two quantizers.
    assert ops.count("HardSwish") == sum(layer.name.endswith("_hard_swish") for layer in model.layers)
    pixels, labels = held_out_pixels(cache_dir, cfg.model.image_size)
    pixels = np.floor(pixels + 0.5)
    # The twin answers what the SavedModel serves (test_qat_export_serves_the_twin_and_int8_agrees),
    # and it also gives the quantized input.
    twin = export.serving_model(model, cfg)
    probe = keras.Model(twin.input, [twin.get_layer("input_quant").output, twin.outputs[0]])
    quantized_input, expected = (np.asarray(t) for t in probe(pixels, training=False))

    # The [-1, 1] input sits exactly halfway between two int8 steps ((2k - 255) / 255 on a grid of
    # 2 / 255 holding 0), so each backend rounds it by its own convention and float noise (the
    # SavedModel half up, ONNX half to even): compare the rest of the graph from the same input.
    entrance = next(node.output[0] for node in graph.node
                    if node.op_type == "DequantizeLinear" and "/input_quant" in node.name)
    rest = str(tmp_path / "rest.onnx")
    onnx.utils.extract_model(str(path), rest, [entrance], [graph.output[0].name])
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(rest, options, providers=["CPUExecutionProvider"])
    as_written = session.run(None, {session.get_inputs()[0].name: quantized_input})[0]
    # Measured: 99.7% same top-1, probabilities 0.0004 apart on average (the fused kernels: 0.02).
    assert np.abs(as_written - expected).mean() < 0.002
    assert np.mean(np.argmax(as_written, 1) == np.argmax(expected, 1)) >= 0.98

    # Fused into integer kernels, from the pixels: on this undertrained model (~0.4 top-1, flat
    # probabilities) they flip many near-ties (measured: 76% same top-1 for V2, TFLite's int8 89%)
    # and are as accurate (0.417 against the SavedModel's 0.419 on 360 digits).
    actual = onnx_export.OnnxModel(str(path))(pixels)
    assert np.abs(actual - expected).mean() < 0.03
    assert abs(np.mean(np.argmax(actual, 1) == labels) - np.mean(np.argmax(expected, 1) == labels)) <= 0.03


@QAT_RUN
@pytest.mark.parametrize("qat_run", ["mobilenet_v2"], indirect=True)
@pytest.mark.parametrize("flags,message", [
    (["--alpha=0.5"], "--init_checkpoint={float}: a run of mobilenet_v2 alpha 0.35"),
    (["--model=mobilenet_v1"], "--init_checkpoint={float}: a run of mobilenet_v2 alpha 0.35"),
    (["--alpha=0.35", "--precision=mixed_bfloat16"], "--qat with --precision=mixed_bfloat16"),
    (["--alpha=0.35", "--sync_bn"], "--qat with --sync_bn"),
])
def test_qat_refuses_bad_combinations_in_one_line(qat_run, cache_dir, tmp_path, flags, message):
    result = run("train", "--qat", f"--init_checkpoint={qat_run / 'float'}", *flags,
                 f"--model_dir={tmp_path / 'run'}", cache_dir=cache_dir)
    assert message.format(float=qat_run / "float") in one_error_line(result, "train")
    assert not os.path.exists(tmp_path / "run")


def test_qat_needs_a_starting_point(cache_dir, tmp_path):
    result = run("train", "--qat", f"--model_dir={tmp_path / 'run'}", cache_dir=cache_dir)
    assert "--qat: give --init_checkpoint=RUN_DIR" in one_error_line(result, "train")
    result = run("train", "--qat", f"--init_checkpoint={tmp_path / 'missing'}", f"--model_dir={tmp_path / 'run'}",
                 cache_dir=cache_dir)
    assert "no checkpoint there" in one_error_line(result, "train")


@pytest.mark.slow  # one more QAT run; CI runs it
@pytest.mark.parametrize("qat_run", ["mobilenet_v3_small"], indirect=True)  # the twin with the most state
def test_qat_sigkill_and_restart_is_bit_identical(qat_run, cache_dir, tmp_path):
    """Killed after its checkpoint at step 54 and started again, V3-Small's QAT run (hard-swish and
    squeeze-excite ranges, frozen BN) ends with every tensor of its checkpoint equal to the
    uninterrupted run's (the fixture's own)."""
    env = env_for(cache_dir)
    flags = qat_flags(qat_run, "mobilenet_v3_small")
    resumed = tmp_path / "resumed"
    code, _ = run_until(cli("train", *flags, f"--model_dir={resumed}"), env, "step 56/88")
    assert code == -signal.SIGKILL
    finished = run("train", *flags, f"--model_dir={resumed}", cache_dir=cache_dir)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "starting at step 54" in finished.stderr or "starting at step 60" in finished.stderr
    expected = checkpoint_tensors(str(qat_run / "qat" / "ckpt-88"))
    actual = checkpoint_tensors(str(resumed / "ckpt-88"))
    assert any("/min/" in key for key in expected) and any("/step/" in key for key in expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
