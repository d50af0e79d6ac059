"""`mobilenet-eval` as users run it (a subprocess) on a checkpoint, its SavedModel and its TFLite
models; and the int8 model's accuracy against float on the held-out digits."""

import json

import numpy as np
import pytest
import tensorflow as tf

import clis
from conftest import copy_of


def metrics_of(result):
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"top1", "top5", "examples"}
    return metrics


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_run):
    """The shared trained run (export/1 written by training), with float32 and int8 TFLite models."""
    from mobilenet_tf import tflite
    from mobilenet_tf.checkpoint import restore_model
    from mobilenet_tf.data import sources

    model_dir = copy_of(digits_run[0], tmp_path_factory)
    model, cfg = restore_model(str(model_dir))
    representative = tflite.representative_pixels(sources.resolve(cfg.data), cfg, 200)
    tflite.write_models(model, cfg, str(model_dir / "export"), ["float32", "int8"], representative)
    return model_dir, digits_run[1]


@pytest.fixture(scope="module")
def checkpoint_metrics(run, cache_dir):
    model_dir, _ = run
    return metrics_of(clis.run("eval", f"--model_dir={model_dir}", cache_dir=cache_dir))


def test_checkpoint_eval_is_the_training_evaluation(run, checkpoint_metrics):
    _, trained = run
    assert checkpoint_metrics["examples"] == 360
    assert checkpoint_metrics["top1"] == pytest.approx(trained["top1"], abs=1e-9)
    assert checkpoint_metrics["top5"] == pytest.approx(trained["top5"], abs=1e-9)


def test_saved_model_and_float_tflite_score_as_the_checkpoint(run, checkpoint_metrics, cache_dir):
    model_dir, _ = run
    # The SavedModel is scored through serving_default on the encoded images: TF Serving's path.
    saved = metrics_of(clis.run("eval", f"--saved_model={model_dir / 'export' / '1'}", "--dataset=digits",
                                cache_dir=cache_dir))
    tflite_float = metrics_of(clis.run("eval", f"--tflite={model_dir / 'export' / 'tflite' / 'model_float32.tflite'}",
                                       cache_dir=cache_dir))
    for metrics in (saved, tflite_float):
        assert metrics["examples"] == 360
        # Float round-off may flip at most one near-tie.
        assert abs(metrics["top1"] - checkpoint_metrics["top1"]) <= 1 / 360
        assert abs(metrics["top5"] - checkpoint_metrics["top5"]) <= 1 / 360


def test_int8_keeps_the_float_accuracy(run, cache_dir):
    """docs/quantization.md's claim for post-training int8: it loses at most 1 point of top-1 and agrees with float on >= 97%."""
    from mobilenet_tf import predict
    from mobilenet_tf.data import sources, tfrecord
    from mobilenet_tf.config import DataConfig

    model_dir, _ = run
    tflite_dir = model_dir / "export" / "tflite"
    int8 = metrics_of(clis.run("eval", f"--tflite={tflite_dir / 'model_int8.tflite'}", cache_dir=cache_dir))
    info = sources.resolve(DataConfig(dataset="digits", cache_dir=str(cache_dir)))
    encoded, labels = next(iter(
        tf.data.TFRecordDataset(info.files("validation")).map(tfrecord.parse).batch(1000).as_numpy_iterator()
    ))
    float_top1 = predict.load(str(tflite_dir / "model_float32.tflite")).predict(encoded).argmax(axis=1)
    int8_top1 = predict.load(str(tflite_dir / "model_int8.tflite")).predict(encoded).argmax(axis=1)
    assert int8["top1"] == pytest.approx(np.mean(int8_top1 == labels), abs=1e-9)
    assert np.mean(float_top1 == labels) >= 0.9, "the model is too weak for the claim to mean anything"
    assert int8["top1"] >= np.mean(float_top1 == labels) - 0.01
    assert np.mean(int8_top1 == float_top1) >= 0.97


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--saved_model=SAVED", "--tflite=/nonexistent.tflite"], "--model_dir, --saved_model, --tflite or --onnx"),
        (["--saved_model=SAVED", "--dataset=tfrecord:/nonexistent"], "--dataset"),
    ],
)
def test_bad_flags_fail_in_one_line(run, cache_dir, args, flag):
    model_dir, _ = run
    args = [arg.replace("SAVED", str(model_dir / "export" / "1")) for arg in args]
    result = clis.run("eval", *args, cache_dir=cache_dir)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mobilenet-eval: error:")]
    assert result.returncode == 1 and len(errors) == 1 and flag in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
