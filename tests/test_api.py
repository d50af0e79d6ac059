"""The Python surface: `create_model` for every family, with and without the top, trained with
Keras' own `fit`; `load_model` of a run and of its exports agreeing with `mobilenet-predict`; `.keras`
files read back in a fresh process; `import mobilenet_tf` loading no TensorFlow; the bad-argument
messages."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import mobilenet_tf
from mobilenet_tf.models import DEFAULT_IMAGE_SIZES, MODEL_NAMES

from clis import REPO, env_for, run
from conftest import copy_of
from images import held_out_pixels
from weights import assert_input_dependent


@pytest.fixture(autouse=True)
def fresh_session():
    keras.backend.clear_session()
    yield


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_create_model_takes_pixels_with_and_without_the_top(name):
    model = mobilenet_tf.create_model(name, num_classes=7, image_size=64, alpha=0.5)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    probabilities = model(pixels, training=False).numpy()
    assert model.input_shape == (None, 64, 64, 3) and probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert model.get_layer("rescale") is not None and model.class_names is None  # 0-255 in, normalized inside
    body = mobilenet_tf.create_model(name, image_size=64, alpha=0.5, include_top=False)
    assert len(body.output_shape) == 4 and body.output_shape[1:3] == (2, 2)
    default = DEFAULT_IMAGE_SIZES.get(name, 224)
    assert mobilenet_tf.create_model(name, include_top=False, alpha=0.5).input_shape[1:3] == (default, default)


def test_fit_on_the_digits_under_a_strategy():
    """Keras' own compile and fit, under a tf.distribute strategy's scope, on the digits' pixels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.repeat(np.repeat(digits.images[..., None] * (255 / 16), 4, axis=1), 4, axis=2)
    pixels = np.repeat(images, 3, axis=-1).astype(np.float32)  # 32x32 RGB, 0-255
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        # The digits recipe's batch-norm momentum: keras.applications' 0.999 needs thousands of steps.
        model = mobilenet_tf.create_model("mobilenet_v2", alpha=0.35, image_size=32, num_classes=10, bn_momentum=0.9)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    keras.utils.set_random_seed(0)
    history = model.fit(pixels[:1400], digits.target[:1400], epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    _, accuracy = model.evaluate(pixels[1400:], digits.target[1400:], verbose=0)
    assert accuracy > 0.5  # chance: 0.1


@pytest.fixture(scope="module")
def exported_run(digits_run, tmp_path_factory):
    """A copy of the shared digits run with its SavedModel, TFLite float32 and `.keras` exports."""
    run_dir = copy_of(digits_run[0], tmp_path_factory)
    result = run("export", f"--model_dir={run_dir}", "--keras", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, json.loads(result.stdout.strip().splitlines()[-1])


def test_load_model_agrees_with_mobilenet_predict(exported_run, cache_dir, tmp_path):
    """The run, its SavedModel and its `.keras` file as Keras models give the probabilities that
    `mobilenet-predict` prints for the same held-out digits (32x32 PNGs: no resize in between)."""
    run_dir, written = exported_run
    pixels, _ = held_out_pixels(cache_dir, count=6)
    files = []
    for i, image in enumerate(pixels):
        files.append(str(tmp_path / f"{i}.png"))
        tf.io.write_file(files[-1], tf.io.encode_png(np.round(image).astype(np.uint8)))
    pixels = np.round(pixels)
    predicted = run("predict", f"--model={run_dir}", "--json", "--top_k=10", *files, cache_dir=cache_dir)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    expected = [{c["class"]: c["probability"] for c in json.loads(line)["predictions"]}
                for line in predicted.stdout.splitlines()]
    for path in (str(run_dir), written["saved_model"], written["keras"]):
        model = mobilenet_tf.load_model(path)
        assert model.class_names == tuple(str(i) for i in range(10)), path
        probabilities = model(pixels).numpy()
        assert_input_dependent(probabilities)
        for row, answer in zip(probabilities, expected):
            top = {model.class_names[i]: row[i] for i in np.argsort(-row)[:3]}
            for name, score in top.items():
                assert abs(answer[name] - score) < 1e-5, (path, name)


def test_keras_file_reads_back_in_a_fresh_process(exported_run, tmp_path):
    """`keras.saving.load_model` after `import mobilenet_tf`, in either order: the same outputs.
    Without the package, Keras reads a V1-V4-Conv export too (no layer of ours computes in it)."""
    run_dir, written = exported_run
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    expected = mobilenet_tf.load_model(written["keras"])(pixels).numpy()
    script = ("import numpy as np{first}\nimport keras{second}\n"
              f"m = keras.saving.load_model({written['keras']!r})\n"
              f"print(np.abs(m(np.load({str(tmp_path / 'pixels.npy')!r})).numpy() - np.load({str(tmp_path / 'expected.npy')!r})).max())")
    np.save(tmp_path / "expected.npy", expected)
    for first, second in (("\nimport mobilenet_tf", ""), ("", "\nimport mobilenet_tf"), ("", "")):
        env = env_for() if "mobilenet_tf" in first + second else dict(os.environ, PYTHONPATH="")
        done = subprocess.run([sys.executable, "-c", script.format(first=first, second=second)], capture_output=True,
                              text=True, env=env, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr[-2000:]
        assert float(done.stdout.strip().splitlines()[-1]) == 0.0


@pytest.mark.parametrize("name", ["mobilenet_v4_hybrid_medium", "mobilenet_v2"])
def test_a_keras_file_of_our_layers_needs_the_package(name, tmp_path):
    """A hybrid (attention, layer scale), or any model saved straight from create_model (our batch
    norm): plain Keras cannot read it; after `import mobilenet_tf` it can."""
    model = mobilenet_tf.create_model(name, num_classes=3, image_size=64, alpha=0.5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    plain = subprocess.run([sys.executable, "-c", f"import keras; keras.saving.load_model({path!r})"],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=""), cwd=str(tmp_path))
    assert plain.returncode != 0 and "mobilenet_tf>" in plain.stderr
    ours = subprocess.run([sys.executable, "-c", f"import mobilenet_tf, keras; keras.saving.load_model({path!r})"],
                          capture_output=True, text=True, env=env_for(), cwd=str(tmp_path))
    assert ours.returncode == 0, ours.stderr[-2000:]


def test_import_loads_no_tensorflow():
    done = subprocess.run([sys.executable, "-c", "import sys, mobilenet_tf; print(mobilenet_tf.__all__); "
                           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"],
                          capture_output=True, text=True, env=env_for(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    names, loaded = done.stdout.strip().splitlines()
    assert loaded == "[]" and "create_model" in names and "load_model" in names


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(name="resnet50"), ValueError, "name='resnet50': not a MobileNet we build; use one of mobilenet_v1"),
    (dict(name="mobilenet_v1", alpha=2.0), ValueError, "alpha=2.0: mobilenet_v1 takes widths 0.25 to 1.25"),
    (dict(name="mobilenet_v2", image_size=16), ValueError, "image_size=16: give an int or (height, width), each at least 32"),
    (dict(name="mobilenet_v2", depth=2), ValueError, "unknown option(s) depth"),
    (dict(name="mobilenet_v2", minimalistic=True), ValueError, "minimalistic=True: mobilenet_v2 has none"),
    (dict(name="mobilenet_v4_conv_small", pretrained="imagenet"), ValueError, "keras.applications has no weights of"),
    (dict(name="mobilenet_v2", pretrained="no/such/file.h5"), FileNotFoundError, "pretrained='no/such/file.h5'"),
])
def test_bad_arguments_are_one_message(kwargs, error, message):
    with pytest.raises(error) as raised:
        mobilenet_tf.create_model(**kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_load_model_of_something_else_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training run's model_dir, a .keras file or a SavedModel"):
        mobilenet_tf.load_model(str(tmp_path))
