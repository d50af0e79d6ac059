"""`mobilenet-train` run as users run it (a subprocess), and the SavedModel it exports."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from images import encode_bmp, encode_gif

@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, cache_dir):
    """One short epoch of the default (digits) run."""
    model_dir = tmp_path_factory.mktemp("run")
    result = run("train", "--epochs=1", f"--model_dir={model_dir}", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result
from clis import env_for, run


def digit_png(cache_dir, split_folder="val", label="3"):
    folder = os.path.join(cache_dir, "digits", split_folder, label)
    with open(os.path.join(folder, sorted(os.listdir(folder))[0]), "rb") as f:
        return f.read()


def test_trains_checkpoints_evaluates_and_exports(one_epoch):
    model_dir, result = one_epoch
    match = re.search(r"held-out top-1 ([0-9.]+)\s+top-5 ([0-9.]+)\s+\((\d+) images\); exported to (\S+)$",
                      result.stdout.splitlines()[-1])
    assert match and match.group(4) == str(model_dir / "export" / "1"), result.stdout
    assert match.group(3) == "360"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["examples"] == 360 and metrics["step"] == 1437 // 32
    assert abs(metrics["top1"] - float(match.group(1))) < 1e-4
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{1437 // 32}")
    # The export is version 1 in TF Serving's model base path layout, and nothing temporary is left.
    assert sorted(os.listdir(model_dir / "export")) == ["1"]
    assert os.path.isfile(model_dir / "export" / "1" / "saved_model.pb")
    assert (model_dir / "export" / "1" / "assets" / "labels.txt").read_text().split() == [str(c) for c in range(10)]
    # Progress is visible: per-N-steps log lines with step, loss, lr and img/s.
    assert re.search(r"step 20/44 loss [0-9.]+ top1 [0-9.]+ lr [0-9.]+ [0-9.]+ img/s", result.stderr)


@pytest.fixture(scope="module")
def served(one_epoch):
    model_dir, _ = one_epoch
    return tf.saved_model.load(str(model_dir / "export" / "1"))


def test_serving_signature_on_encoded_images(served, cache_dir):
    serve = served.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["images"]
    png = digit_png(cache_dir)
    gray = tf.io.decode_png(png).numpy()[:, :, 0]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    same_pixels = [png, tf.io.encode_png(rgb).numpy(), encode_bmp(rgb), encode_gif(gray)]
    out = serve(images=tf.constant(same_pixels))
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (4, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Lossless formats, gray or RGB, give the same answer.
    for row in probabilities[1:]:
        np.testing.assert_allclose(row, probabilities[0], atol=1e-6)
    assert out["classes"].shape == (4, 5) and out["scores"].shape == (4, 5)
    np.testing.assert_array_equal(out["classes"].numpy()[:, 0], probabilities.argmax(axis=1))
    names = out["class_names"].numpy()
    assert names[0, 0].decode() == str(probabilities[0].argmax())
    np.testing.assert_allclose(out["scores"].numpy()[:, 0], probabilities.max(axis=1), rtol=1e-6)
    # A JPEG (lossy) of an upscaled digit is served too.
    big = tf.image.resize(rgb, [64, 64]).numpy().round().astype(np.uint8)
    jpeg = serve(images=tf.constant([tf.io.encode_jpeg(big, quality=95).numpy()]))["probabilities"]
    assert jpeg.shape == (1, 10)


def test_serving_equals_evaluation_preprocessing(served, cache_dir):
    """What serving computes from bytes is the model on evaluation-preprocessed pixels."""
    from mobilenet_tf.data import preprocess

    png = digit_png(cache_dir, label="7")
    pixels = preprocess.eval_pixels(tf.constant(png), (32, 32), 1.0)[None]
    by_bytes = served.signatures["serving_default"](images=tf.constant([png]))["probabilities"].numpy()
    by_pixels = served.signatures["serving_pixels"](pixels=pixels)["probabilities"].numpy()
    np.testing.assert_allclose(by_bytes, by_pixels, atol=1e-6)


def test_bad_bytes_are_rejected_and_serving_continues(served, cache_dir):
    serve = served.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)image"):
        serve(images=tf.constant([b"this is not an image"]))
    out = serve(images=tf.constant([digit_png(cache_dir)]))
    assert out["probabilities"].shape == (1, 10)


def test_resumes_from_checkpoint(one_epoch, cache_dir, tmp_path):
    """Started again with more epochs, the run continues from the saved step, and exports version 2;
    with --json its last line is the result as JSON."""
    model_dir, _ = one_epoch
    result = run("train", "--epochs=2", f"--model_dir={model_dir}", "--json", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["step"] == 88 and outcome["examples"] == 360 and outcome["export"] == str(model_dir / "export" / "2")
    assert "starting at step 44" in result.stderr
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-88")
    assert sorted(os.listdir(model_dir / "export")) == ["1", "2"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--image_size=16", "--image_size"),
        ("--alpha=2.0", "--alpha"),
        ("--dataset=tfrecord:/nonexistent", "--dataset"),
        ("--dataset=imagenet_nope", "--dataset"),
        ("--batch_size=5000", "--batch_size"),
        ("--epochs=0", "--epochs"),
        ("--strategy=tpu", "--strategy=tpu: no TPU reachable"),  # no TPU here
        ("--strategy=multi_worker TF_CONFIG={bad", "TF_CONFIG is not valid JSON"),
        ("--minimalistic", "--minimalistic: mobilenet_v2 has no minimalistic variant"),
        ("--model=mobilenet_v3_small --alpha=3", "--alpha=3.0: mobilenet_v3_small takes widths 0.25 to 2.0"),
        ("--model=mobilenet_v3_large --minimalistic --alpha=0.75 --pretrained=imagenet",
         "--pretrained: keras.applications has no ImageNet weights for mobilenet_v3_large minimalistic alpha 0.75; "
         "use one of 1.0"),
    ],
)
def test_bad_flags_fail_in_one_line(flag, message, cache_dir, tmp_path):
    flag, _, tf_config = flag.partition(" TF_CONFIG=")
    env = {"TF_CONFIG": tf_config} if tf_config else {}
    result = run("train", *flag.split(), f"--model_dir={tmp_path / 'run'}", cache_dir=cache_dir, env=env_for(cache_dir, **env))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("mobilenet-train: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")
