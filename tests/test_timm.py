"""timm's checkpoints in our models, checked against timm itself (the `timm` extra: PyTorch and timm as
a test-only peer): every architecture behind timm's MobileNet tags gives timm's probabilities; a
checkpoint that does not fit is refused naming the tensor; the commands take a checkpoint as
--pretrained (a fine-tune resumed exactly after SIGKILL, QAT to all-int8, `mobilenet-export
--pretrained`), and refuse what cannot work in one line."""

import json
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

timm_peer = pytest.importorskip("timm_peer", reason="the timm extra (pip install -e .[timm]) is not installed")

from mobilenet_tf import config, onnx_export, predict, tflite  # noqa: E402
from mobilenet_tf.models import timm_archs  # noqa: E402
from mobilenet_tf.models.build import build_from_config, count_macs  # noqa: E402
from mobilenet_tf.models.pretrained import load_pretrained  # noqa: E402
from mobilenet_tf.models.timm_archs import TimmError  # noqa: E402
from mobilenet_tf.models.timm_weights import load_timm  # noqa: E402

from clis import checkpoint_tensors, cli, env_for, one_error_line, run, run_until  # noqa: E402
from weights import assert_input_dependent  # noqa: E402

# One architecture per family at its checkpoint's input size; the rest at 64x64, which exercises
# the same layers at a fraction of the time.
FULL_SIZE = {"mobilenetv1_100": 224, "mobilenetv2_100": 224, "mobilenetv3_large_100": 224,
             "tf_mobilenetv3_large_100": 224, "mobilenetv4_conv_small": 224, "mobilenetv4_hybrid_medium": 256}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """checkpoint(architecture, size) -> (folder, timm's model): random timm checkpoints, made once."""
    made = {}

    def checkpoint(architecture, size=64):
        if (architecture, size) not in made:
            folder = tmp_path_factory.mktemp("timm") / architecture
            made[architecture, size] = folder, timm_peer.random_checkpoint(architecture, folder, image_size=size)
        return made[architecture, size]

    return checkpoint


def loaded(folder, size=None, include_preprocessing=True):
    """(our model with the checkpoint in `folder` loaded as --pretrained loads it, its ModelConfig)."""
    checkpoint = timm_archs.resolve(str(folder))
    fields = dict(checkpoint.model, image_size=(size, size)) if size else checkpoint.model
    model_cfg = config.ModelConfig(**fields, num_classes=checkpoint.num_classes, dropout=0.0)
    model = build_from_config(model_cfg, include_preprocessing=include_preprocessing)
    load_pretrained(model, model_cfg, str(folder))
    return model, model_cfg


@pytest.fixture(autouse=True)
def fresh_session():
    keras.backend.clear_session()
    yield


@pytest.mark.parametrize("architecture", sorted(timm_archs.ARCHITECTURES))
def test_probabilities_equal_timms(architecture, checkpoints):
    size = FULL_SIZE.get(architecture, 64)
    folder, reference = checkpoints(architecture, size)
    model, _ = loaded(folder, size)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    expected = timm_peer.probabilities(reference, pixels)
    actual = model(pixels, training=False).numpy()
    assert_input_dependent(expected)
    assert expected.max() > 0.01  # spread probabilities, not ~1/1000 each
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)
    assert (actual.argmax(-1) == expected.argmax(-1)).all()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == timm_peer.trainable_parameters(reference)


# timm's parameter counts of the hybrids (its model cards: 11.07M and 37.76M) and our MACs of their
# convolutions and classifier at their checkpoints' sizes (the attention's two matrix products
# are not counted, as the papers count no element-wise or pooling work either).
HYBRIDS = {"mobilenetv4_hybrid_medium": (256, 11_074_648, 1_229_240_320),
           "mobilenetv4_hybrid_large": (384, 37_764_624, 7_372_138_496)}


@pytest.mark.parametrize("architecture", sorted(HYBRIDS))
def test_hybrid_sizes(architecture):
    size, params, macs = HYBRIDS[architecture]
    fields = dict(timm_archs.ARCHITECTURES[architecture], image_size=(size, size))
    model = build_from_config(config.ModelConfig(**fields, num_classes=1000))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params
    assert count_macs(model) == macs


def _rewritten(folder, tmp_path, change):
    """A copy of the checkpoint in `folder` whose tensors `change(dict)` edited."""
    from safetensors.numpy import load_file, save_file

    copy = tmp_path / "changed"
    copy.mkdir()
    (copy / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(copy / "model.safetensors"))
    return copy


@pytest.mark.parametrize("change,message", [
    (lambda t: t.pop("blocks.1.0.conv_pwl.weight"), "no tensor blocks.1.0.conv_pwl.weight for our layer block_1_project"),
    (lambda t: t.update({"blocks.9.9.extra.weight": np.zeros(3, np.float32)}), "tensor blocks.9.9.extra.weight fills no layer"),
    (lambda t: t.update({"blocks.1.0.conv_pwl.weight": np.zeros((24, 96, 1, 1), np.float32)}),
     "tensor blocks.1.0.conv_pwl.weight of shape (24, 96, 1, 1) does not fit our layer block_1_project"),
], ids=["missing", "left_over", "shape"])
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_tensor(change, message, checkpoints, tmp_path):
    folder, _ = checkpoints("mobilenetv2_050")
    model_cfg = config.ModelConfig(**timm_archs.resolve(str(folder)).model, num_classes=1000)
    model = build_from_config(model_cfg)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(TimmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_timm(model, model_cfg, timm_archs.resolve(str(_rewritten(folder, tmp_path, change))))
    for weight, value in zip(model.weights, before):  # never a partial load
        np.testing.assert_array_equal(weight.numpy(), value)


def test_export_pretrained_writes_a_run_and_its_exports(checkpoints, tmp_path):
    """`mobilenet-export --pretrained=DIR`: a run of the checkpoint and its SavedModel (both
    signatures), TFLite and ONNX, each giving timm's probabilities for the same pixels; predict
    takes the run and its exports."""
    folder, reference = checkpoints("mobilenetv4_conv_small", 224)
    run_dir = tmp_path / "run"
    result = run("export", f"--pretrained={folder}", f"--model_dir={run_dir}", "--tflite=float32", "--onnx", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(result.stdout.strip().splitlines()[-1])
    cfg = config.load(str(run_dir))
    assert cfg.model.name == "mobilenet_v4_conv_small" and cfg.model.layout == "timm"
    assert cfg.model.image_size == (224, 224) and cfg.data.eval_transform == "timm_bicubic"
    assert len(cfg.model.class_names) == 1000 and cfg.model.class_names[:2] == ("tench", "goldfish")

    pixels = np.random.default_rng(3).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    expected = timm_peer.probabilities(reference, pixels)
    serving = tf.saved_model.load(written["saved_model"]).signatures
    got = serving["serving_pixels"](pixels=tf.constant(pixels))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, rtol=0, atol=1e-4)
    assert got["class_names"].numpy()[0, 0].decode() == cfg.model.class_names[int(expected[0].argmax())]
    lite = tflite.LiteRTModel(written["tflite"]["float32"])
    np.testing.assert_allclose(np.concatenate([lite(p[None]) for p in pixels]), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(onnx_export.OnnxModel(written["onnx"])(pixels), expected, rtol=0, atol=1e-4)

    # The encoded bytes go through the checkpoint's evaluation transform: the same answers from the
    # SavedModel's own signature, the run's checkpoint and the TFLite file.
    png = tf.io.encode_png(pixels[0].astype(np.uint8)).numpy()
    answers = [predict.load(path).predict([png]) for path in (str(run_dir), written["saved_model"],
                                                               written["tflite"]["float32"])]
    for answer in answers[1:]:
        np.testing.assert_allclose(answer, answers[0], rtol=0, atol=1e-4)

    again = run("export", f"--pretrained={folder}", f"--model_dir={run_dir}")
    assert "holds a run already" in one_error_line(again, "export")


@pytest.mark.slow
def test_finetune_from_a_checkpoint_resumes_exactly_after_sigkill(checkpoints, tmp_path, cache_dir):
    """V4-Conv-S (at 0.5, for time) from a timm checkpoint, fine-tuned on the digits: killed mid-run
    and started again, it ends with every tensor equal to the uninterrupted run's."""
    folder, _ = checkpoints("mobilenetv4_conv_small_050")
    env = env_for(cache_dir)
    flags = [f"--pretrained={folder}", "--image_size=32", "--epochs=2", "--batch_size=32", "--log_steps=4",
             "--deterministic", "--checkpoint_steps=6"]
    reference = run("train", *flags, f"--model_dir={tmp_path / 'reference'}", cache_dir=cache_dir)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "Initialized from timm's mobilenetv4_conv_small_050 weights" in reference.stderr
    cfg = config.load(str(tmp_path / "reference"))
    assert (cfg.model.name, cfg.model.alpha, cfg.model.layout, cfg.model.bn_epsilon) == (
        "mobilenet_v4_conv_small", 0.5, "timm", 1e-5)
    published = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert cfg.model.mean == tuple(published["mean"]) == (0.5, 0.5, 0.5) and cfg.model.num_classes == 10

    resumed = tmp_path / "resumed"
    assert run_until(cli("train", *flags, f"--model_dir={resumed}"), env, "step 32/88")[0] == -signal.SIGKILL
    finished = run("train", *flags, f"--model_dir={resumed}", cache_dir=cache_dir)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "starting at step 30" in finished.stderr
    expected = checkpoint_tensors(str(tmp_path / "reference" / "ckpt-88"))
    actual = checkpoint_tensors(str(resumed / "ckpt-88"))
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.mark.slow
def test_qat_from_a_checkpoint_to_all_int8(checkpoints, tmp_path, cache_dir):
    """--qat straight from a timm checkpoint (V4-Conv-S at 0.5, for time; the hybrids' attention is
    converted in test_mobilenet_v4.py): its int8 TFLite model runs every op on int8."""
    folder, _ = checkpoints("mobilenetv4_conv_small_050")
    run_dir = tmp_path / "qat"
    trained = run("train", f"--pretrained={folder}", "--qat", "--image_size=32", "--epochs=1", "--batch_size=32",
                  f"--model_dir={run_dir}", "--log_steps=0", cache_dir=cache_dir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Initialized from timm's mobilenetv4_conv_small_050 weights" in trained.stderr
    exported = run("export", f"--model_dir={run_dir}", "--tflite=int8", "--json", cache_dir=cache_dir)
    assert exported.returncode == 0, exported.stderr[-3000:]
    path = json.loads(exported.stdout.strip().splitlines()[-1])["tflite"]["int8"]
    ops = tflite.op_types(open(path, "rb").read())
    assert ops[0] == ("QUANTIZE", "uint8") and ops[-1] == ("DEQUANTIZE", "int8")
    assert all(dtype == "int8" for _, dtype in ops[1:]), ops


def _train_args(*flags):
    return ["--epochs=1", "--batch_size=32", *flags]


def test_contradicting_model_flags_are_refused(checkpoints, tmp_path, cache_dir):
    folder, _ = checkpoints("mobilenetv2_050")
    result = run("train", *_train_args(f"--pretrained={folder}", "--model=mobilenet_v3_small",
                                       f"--model_dir={tmp_path / 'run'}"), cache_dir=cache_dir)
    line = one_error_line(result, "train")
    assert "--model=mobilenet_v3_small" in line and "timm's mobilenetv2_050" in line
    result = run("train", *_train_args(f"--pretrained={folder}", "--alpha=1.0", f"--model_dir={tmp_path / 'run'}"),
                 cache_dir=cache_dir)
    assert "--alpha=1.0" in one_error_line(result, "train")
    assert not (tmp_path / "run").exists()


def test_unknown_architecture_and_corrupt_weights_are_one_line(checkpoints, tmp_path, cache_dir):
    folder, _ = checkpoints("mobilenetv2_050")
    other = tmp_path / "resnet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    (other / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    line = one_error_line(run("train", *_train_args(f"--pretrained={other}", f"--model_dir={tmp_path / 'a'}"),
                              cache_dir=cache_dir), "train")
    assert "'resnet50' is not one we build" in line and "mobilenetv4_hybrid_large" in line

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((folder / "config.json").read_text())
    weights = (folder / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    for command, args in (("train", _train_args(f"--model_dir={tmp_path / 'b'}")), ("export", [f"--model_dir={tmp_path / 'b'}"])):
        line = one_error_line(run(command, f"--pretrained={truncated}", *args, cache_dir=cache_dir), command)
        assert f"{truncated / 'model.safetensors'} is not a readable safetensors file" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_network_names_the_repository_and_hf_download(tmp_path, cache_dir):
    """No network here (nor in CI): a Hub id that is not in the cache ends in one line."""
    env = env_for(cache_dir, HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    repo = "timm/mobilenetv4_conv_small.e2400_r224_in1k"
    result = run("train", *_train_args(f"--pretrained={repo}", f"--model_dir={tmp_path / 'run'}"), env=env)
    line = one_error_line(result, "train")
    assert f"hf download {repo} --local-dir DIR" in line and "--pretrained=DIR" in line
    assert "Retrying" not in result.stderr and not (tmp_path / "run").exists()
    offline = run("train", *_train_args(f"--pretrained={repo}"), env=dict(env, HF_HUB_OFFLINE="1"))
    assert "HF_HUB_OFFLINE is set" in one_error_line(offline, "train")
