"""The native training kernels (mobilenet_tf/kernels): compiled here with the machine's g++, their
outputs and gradients against TensorFlow's own ops, where they apply and where they do not, and
what a machine without a compiler gets."""

import collections
import contextlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import kernels


def depthwise_gradients(x, kernel, strides, padding, upstream, native):
    """(input gradient, filter gradient, the gradient graph's op types) of one depthwise conv."""
    @tf.function
    def run(x, kernel):
        scope = kernels.native_ops if native else contextlib.nullcontext
        with scope(), tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf.nn.depthwise_conv2d(x, kernel, [1, strides, strides, 1], padding)
            grads = tape.gradient(y, [x, kernel], output_gradients=upstream)
        return grads
    dx, dk = run(x, kernel)
    graph = run.get_concrete_function(x, kernel).graph
    return dx.numpy(), dk.numpy(), collections.Counter(op.type for op in graph.get_operations())


# Channels 16, 24 (16 + 8), 12 (8 + 4 single) and 5: every block width; odd and even sizes, SAME
# and VALID padding: every padding the models use (SAME pads the odd pixel at the end).
@pytest.mark.parametrize("kernel,strides,padding,size,channels", [
    (3, 1, "SAME", 9, 16), (3, 2, "SAME", 10, 24), (3, 2, "VALID", 11, 12), (5, 1, "SAME", 7, 5),
    (5, 2, "SAME", 9, 40), (5, 2, "VALID", 12, 24), (7, 1, "SAME", 8, 16), (7, 2, "SAME", 15, 8)])
def test_depthwise_gradients_match_tensorflow(kernel, strides, padding, size, channels):
    rng = np.random.default_rng(kernel * 100 + size)
    x = tf.constant(rng.normal(size=(3, size, size + 1, channels)), tf.float32)
    k = tf.constant(rng.normal(size=(kernel, kernel, channels, 1)), tf.float32)
    y_shape = tf.nn.depthwise_conv2d(x, k, [1, strides, strides, 1], padding).shape
    upstream = tf.constant(rng.normal(size=y_shape), tf.float32)
    dx, dk, ops = depthwise_gradients(x, k, strides, padding, upstream, native=True)
    expected_dx, expected_dk, tf_ops = depthwise_gradients(x, k, strides, padding, upstream, native=False)
    assert ops["MobilenetDepthwiseGradInput"] == 1 and ops["MobilenetDepthwiseGradFilter"] == 1
    assert tf_ops["MobilenetDepthwiseGradInput"] == 0 and tf_ops["DepthwiseConv2dNativeBackpropFilter"] == 1
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, expected_dk, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["explicit padding", "multiplier 2", "float64", "4x4 kernel", "stride 3"])
def test_depthwise_convolutions_the_kernels_do_not_cover_keep_tensorflows_gradient(case):
    rng = np.random.default_rng(0)
    dtype = tf.float64 if case == "float64" else tf.float32
    size = {"4x4 kernel": 4}.get(case, 3)
    x = tf.constant(rng.normal(size=(2, 9, 9, 8)), dtype)
    k = tf.constant(rng.normal(size=(size, size, 8, 2 if case == "multiplier 2" else 1)), dtype)
    strides = 3 if case == "stride 3" else 1
    padding = [[0, 0], [1, 2], [1, 2], [0, 0]] if case == "explicit padding" else "SAME"
    upstream = tf.constant(rng.normal(size=tf.nn.depthwise_conv2d(x, k, [1, strides, strides, 1], padding).shape), dtype)
    dx, dk, ops = depthwise_gradients(x, k, strides, padding, upstream, True)
    expected_dx, expected_dk, _ = depthwise_gradients(x, k, strides, padding, upstream, False)
    assert ops["DepthwiseConv2dNativeBackpropFilter"] == 1 and not any(op.startswith("Mobilenet") for op in ops)
    np.testing.assert_array_equal(dx, expected_dx)
    np.testing.assert_array_equal(dk, expected_dk)


def test_hard_swish_matches_keras_in_the_training_scope_only():
    """`kernels.prepare`d hard-swish layers: the native kernels inside `native_ops()`, Keras' ops
    outside (what every export traces), the same values and gradients (at -3 and 3 too, where the
    ramp's gradient jumps), and an unchanged config."""
    inputs = keras.Input((None,))
    model = keras.Model(inputs, keras.layers.Activation("hard_swish", name="act")(inputs))
    config = model.get_config()
    kernels.prepare(model)
    assert model.get_config() == config
    x = tf.constant(np.concatenate([[-4.0, -3.0, -2.5, 0.0, 1e-3, 2.999, 3.0, 3.5],
                                    np.random.default_rng(0).uniform(-5, 5, 992)])[None], tf.float32)
    upstream = tf.constant(np.random.default_rng(1).normal(size=x.shape), tf.float32)

    def run(scope):
        @tf.function
        def step(x):
            with scope(), tf.GradientTape() as tape:
                tape.watch(x)
                y = model(x)
                return y, tape.gradient(y, x, output_gradients=upstream)
        y, dx = step(x)
        graph = step.get_concrete_function(x).graph
        return y.numpy(), dx.numpy(), {op.type for op in graph.get_operations()}

    y, dx, ops = run(kernels.native_ops)
    expected_y, expected_dx, keras_ops = run(contextlib.nullcontext)
    assert {"MobilenetHardSwish", "MobilenetHardSwishGrad"} <= ops and "Relu6" not in ops
    assert "Relu6" in keras_ops and not any(op.startswith("Mobilenet") for op in keras_ops)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v4_conv_small"])
def test_training_step_runs_the_native_kernels_with_the_same_gradients(name):
    """The whole model's gradients in `train.make_train_loop`'s scopes, against the same model
    without them; the forward graph that evaluation and exports trace holds none of the kernels."""
    from mobilenet_tf import config, train
    from mobilenet_tf.models import layers as model_layers

    cfg = config.replace(config.DIGITS, model={"name": name, "alpha": 0.5, "image_size": (64, 64),
                                               "num_classes": 10, "dropout": 0.0})
    model = train.build_train_model(cfg)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 3)).astype("float32")

    def run(scope):
        @tf.function
        def step(x):
            with scope(), tf.GradientTape() as tape, model_layers.pointwise_as_matmul():
                probs = model(x, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(np.arange(8) % 10, probs))
                gradients = tape.gradient(loss, model.trainable_variables)
            return probs, tf.concat([tf.reshape(g, [-1]) for g in gradients], 0)
        probs, gradients = step(x)
        ops = collections.Counter(op.type for op in step.get_concrete_function(x).graph.get_operations())
        return probs.numpy(), gradients.numpy(), ops

    probs, gradients, ops = run(kernels.native_ops)
    expected, expected_gradients, _ = run(contextlib.nullcontext)
    depthwise = sum(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in model.layers)
    assert ops["MobilenetDepthwiseGradFilter"] == depthwise and ops["DepthwiseConv2dNativeBackpropFilter"] == 0
    hard_swish = sum(isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.hard_swish
                     for layer in model.layers)
    assert ops["MobilenetHardSwish"] == hard_swish and (hard_swish > 0) == (name == "mobilenet_v3_small")
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(gradients - expected_gradients) < 1e-5 * np.linalg.norm(expected_gradients)

    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([None, 64, 64, 3]))
    assert not any(op.type.startswith("Mobilenet") for op in forward.graph.get_operations())


def library_in_subprocess(tmp_path, **env):
    """What `kernels.library()` gives a new process with `env` and an empty kernels folder:
    (stdout, stderr) of a script that prints whether it got the library, and the folder's files."""
    folder = tmp_path / "kernels"
    script = "from mobilenet_tf import kernels; print(kernels.library() is not None)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MOBILENET_TF_KERNELS_DIR": str(folder), "TF_CPP_MIN_LOG_LEVEL": "3",
                                 **env})
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("mobilenet_tf:")]
    return result.stdout.strip(), ours, sorted(os.listdir(folder)) if folder.exists() else []


def test_kernels_compile_once_into_their_folder(tmp_path):
    out, said, files = library_in_subprocess(tmp_path)
    assert out == "True" and said == []
    assert len(files) == 1 and files[0].startswith(f"ops-tf{tf.__version__}-") and files[0].endswith(".so")
    built = os.path.getmtime(tmp_path / "kernels" / files[0])
    assert library_in_subprocess(tmp_path) == (out, said, files)  # loaded, not compiled again
    assert os.path.getmtime(tmp_path / "kernels" / files[0]) == built
    (tmp_path / "kernels" / files[0]).write_bytes(b"not a shared library")
    out, said, _ = library_in_subprocess(tmp_path)
    assert out == "False" and len(said) == 1 and f"{files[0]} did not load" in said[0], said
    assert "delete that file" in said[0]


@pytest.mark.parametrize("compiler,reason", [("no-such-compiler", "no C++ compiler (no-such-compiler)"),
                                             ("false", "did not compile")])
def test_without_a_working_compiler_training_falls_back_in_one_line(tmp_path, compiler, reason):
    out, said, files = library_in_subprocess(tmp_path, CXX=compiler)
    assert out == "False" and files == []  # nothing half-written left behind
    assert len(said) == 1 and reason in said[0] and "training uses TensorFlow's ops" in said[0]
    assert library_in_subprocess(tmp_path, CXX=compiler, MOBILENET_TF_NATIVE_KERNELS="0") == ("False", [], [])
