"""Knowledge distillation: the loss is the formula, a weight of 0 is the run without a teacher bit for
bit, a distilled run resumes bit-identically after SIGKILL (with MixUp's soft labels), and a resumed
run refuses another teacher in one line."""

import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import config, distill, train

from clis import checkpoint_tensors, cli, env_for, one_error_line, run, run_until


def softmax(logits, axis=-1):
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_loss_is_the_formula():
    """(1 - w) CE(smoothed labels, student) + w T^2 KL(teacher_T || student_T) on a fixed batch, the
    tempered softmaxes from the logits themselves; logit gaps up to 60 (where the log of
    probabilities clipped as Keras' cross-entropy clips them, at 1e-7, would be far off)."""
    rng = np.random.default_rng(0)
    student_logits = rng.normal(0, 8, (6, 10))
    teacher_logits = rng.normal(0, 8, (6, 10))
    student_logits[0, 3] += 60.0
    labels = rng.integers(0, 10, 6)
    w, temperature, smoothing = 0.3, 3.0, 0.1
    smoothed = np.eye(10)[labels] * (1 - smoothing) + smoothing / 10
    # The cross-entropy as Keras computes it from probabilities: log p clipped to [1e-7, 1 - 1e-7].
    hard = -(smoothed * np.log(np.clip(softmax(student_logits), 1e-7, 1 - 1e-7))).sum(-1)
    log_s = np.log(softmax(student_logits / temperature))
    log_t = np.log(softmax(teacher_logits / temperature))
    soft = temperature**2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)
    expected = (1 - w) * hard + w * soft

    as_tensor = lambda logits: tf.constant(softmax(logits), tf.float32)  # noqa: E731 - what the models output
    loss, ce, kd = distill.losses(tf.one_hot(labels, 10), as_tensor(student_logits), as_tensor(teacher_logits),
                                  weight=w, temperature=temperature, label_smoothing=smoothing)
    np.testing.assert_allclose(kd, soft, rtol=1e-4)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    np.testing.assert_allclose(ce, hard, rtol=1e-4)
    assert soft.min() > 0.1  # the term bites
    no_teacher, ce_alone, zero = distill.losses(tf.one_hot(labels, 10), as_tensor(student_logits), None, weight=w,
                                                temperature=temperature, label_smoothing=smoothing)
    np.testing.assert_array_equal(no_teacher, ce_alone)
    np.testing.assert_array_equal(zero, np.zeros(6))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, cache_dir):
    """A V2-0.5 digits run of 2 epochs with EMA: the teacher of the runs below."""
    model_dir = tmp_path_factory.mktemp("teacher")
    result = run("train", "--alpha=0.5", "--epochs=2", "--ema_decay=0.9", "--log_steps=0", f"--model_dir={model_dir}",
                 cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_weight_zero_is_the_run_without_a_teacher(teacher, tmp_path, cache_dir):
    """The teacher at a weight of 0 changes nothing: the same weights bit for bit, though the teacher
    ran on every batch (its term is logged); and a resumed run refuses another teacher."""
    base = config.replace(config.DIGITS, model={"name": "mobilenet_v1", "alpha": 0.25},
                          data={"cache_dir": str(cache_dir)},
                          train={"epochs": 1, "deterministic": True, "log_steps": 11, "export": False})
    alone = train.train(config.replace(base, train={"model_dir": str(tmp_path / "alone")}))
    keras.backend.clear_session()
    taught = config.replace(base, train={"model_dir": str(tmp_path / "taught"), "teacher": str(teacher),
                                         "distill_weight": 0.0})
    logged = []

    class Logs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logged.append(dict(logs))

    result = train.train(taught, callbacks=[Logs()])
    assert result["top1"] == alone["top1"]
    expected = checkpoint_tensors(str(tmp_path / "alone" / "ckpt-44"))
    actual = checkpoint_tensors(str(tmp_path / "taught" / "ckpt-44"))
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert all(row["loss_distill"] > 0 and row["loss"] == pytest.approx(row["loss_ce"]) for row in logged)

    other = run("train", "--model=mobilenet_v1", "--alpha=0.25", "--epochs=2", f"--teacher={tmp_path / 'alone'}",
                f"--model_dir={tmp_path / 'taught'}", cache_dir=cache_dir)
    line = one_error_line(other, "train")
    assert f"holds a run of another teacher than this command trains: --teacher {tmp_path / 'alone'}" in line
    assert f"(the run: {teacher})" in line


@pytest.mark.slow  # three short distilled runs; CI runs it
def test_distilled_run_resumes_bit_identical_after_sigkill(teacher, tmp_path, cache_dir):
    """A V4-Conv-S student with stochastic depth at 40x40 (the teacher's batches resized to its
    32x32), with MixUp's soft labels, killed after a checkpoint and started again, ends where the
    uninterrupted run ends: the random state of dropped residual branches is checkpointed too."""
    flags = ["--model=mobilenet_v4_conv_small", "--stochastic_depth=0.3", "--alpha=0.35", "--image_size=40",
             "--epochs=2", "--mixup=0.2", f"--teacher={teacher}",
             "--distill_weight=0.7", "--distill_temperature=2", "--deterministic", "--checkpoint_steps=6",
             "--log_steps=4"]
    reference = run("train", *flags, f"--model_dir={tmp_path / 'reference'}", cache_dir=cache_dir)
    assert reference.returncode == 0, reference.stderr[-3000:]
    # The fixture's teacher is the digits recipe's, label smoothing 0.1: said once, before training.
    assert reference.stderr.count(f"--teacher={teacher} was trained with label smoothing 0.1,") == 1
    resumed = tmp_path / "resumed"
    code, _ = run_until(cli("train", *flags, f"--model_dir={resumed}"), env_for(cache_dir), "step 56/88")
    assert code == -signal.SIGKILL
    finished = run("train", *flags, f"--model_dir={resumed}", cache_dir=cache_dir)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "starting at step 54" in finished.stderr
    expected = checkpoint_tensors(str(tmp_path / "reference" / "ckpt-88"))
    actual = checkpoint_tensors(str(resumed / "ckpt-88"))
    assert any("rng/block_16_drop_path" in key for key in expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert config.load(str(resumed)).train.teacher == str(teacher)
