"""The command line around TensorFlow: help, bad flags, missing paths and refused combinations answered
before TensorFlow is loaded (a TensorFlow that cannot be imported stands in for it here, so a
command that imports it fails the test), each error in one line; a quiet start, and TensorFlow's
own lines back with --verbosity=1. Every command run by the suite is also checked to start quiet
(clis.run)."""

import os
import subprocess
import time

import pytest

from clis import REPO, chatter_in, cli, env_for, one_error_line, run

# (command, flags, what its one error line says)
REFUSED = [
    ("train", ["--alpha=abc"], "flag --alpha=abc: could not convert string to float: 'abc'"),
    ("train", ["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
    ("train", ["--preset=nope"], "--preset=nope: unknown preset"),
    ("train", ["--dataset=tfrecord:/nonexistent"], "/nonexistent has no dataset_info.json"),
    ("train", ["--model=mobilenet_v2", "--minimalistic"], "--minimalistic: mobilenet_v2 has no minimalistic variant"),
    ("train", ["--qat"], "--qat: give --init_checkpoint=RUN_DIR"),
    ("train", ["--model=mobilenet_v4_conv_small", "--pretrained=imagenet"],
     "--pretrained=imagenet: keras.applications has no mobilenet_v4_conv_small; start from timm's weights"),
    ("train", ["--stochastic_depth=0.1"], "--stochastic_depth: mobilenet_v2 has no stochastic depth"),
    ("train", ["--init_checkpoint=/nonexistent"], "--init_checkpoint=/nonexistent: no checkpoint there"),
    ("export", ["--model_dir=/nonexistent"], "--model_dir=/nonexistent: no checkpoint there"),
    ("export", ["--version=abc"], "flag --version=abc"),
    ("eval", ["--tflite=/nonexistent.tflite"], "--tflite=/nonexistent.tflite: no tflite there"),
    ("eval", ["--onnx=a.onnx", "--tflite=b.tflite"], "give exactly one model to evaluate"),
    ("predict", ["--model=/nonexistent", "a.png"], "--model=/nonexistent: not a SavedModel directory"),
    ("predict", ["--top_k=abc"], "flag --top_k=abc"),
    ("demo", ["--model=/nonexistent"], "--model=/nonexistent: not a SavedModel directory"),
    ("convert", ["--source=folder", "--input_dir=/nonexistent", "--output_dir=/tmp/out"],
     "--input_dir=/nonexistent: no such directory"),
    ("convert", ["--source=nope"], "flag --source=nope"),
]
COMMANDS = ["train", "export", "eval", "predict", "demo", "convert"]
# What a machine under load may take to start Python, absl and numpy (0.3 s here when idle).
BOUND_SECONDS = 2.0


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """An environment where `import tensorflow` and `import keras` raise ImportError."""
    shadow = tmp_path_factory.mktemp("no_tensorflow")
    for package in ("tensorflow", "keras"):
        (shadow / package).mkdir()
        (shadow / package / "__init__.py").write_text(f"raise ImportError('{package} was imported')\n")
    return {**env_for(), "PYTHONPATH": f"{shadow}{os.pathsep}{REPO}"}


def timed(command, args, env):
    started = time.monotonic()
    result = subprocess.run(cli(command, *args), capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    return result, time.monotonic() - started


@pytest.mark.parametrize("command,args,message", REFUSED, ids=[f"{c}{' '.join(a)}" for c, a, _ in REFUSED])
def test_refused_in_one_line_without_tensorflow(command, args, message, no_tensorflow):
    result, seconds = timed(command, args, no_tensorflow)
    assert message in one_error_line(result, command)
    assert "was imported" not in result.stderr
    assert seconds < BOUND_SECONDS, seconds  # `benchmarks/cli_start.py` measures the typical time


@pytest.mark.parametrize("command", COMMANDS)
def test_help_without_tensorflow(command, no_tensorflow):
    result, seconds = timed(command, ["--helpshort"], no_tensorflow)
    assert result.returncode == 0 and "--verbosity" not in result.stdout  # the command's own flags, not absl's
    flag = {"train": "--model", "export": "--tflite", "eval": "--report_dir", "predict": "--top_k", "demo": "--port",
            "convert": "--input_dir"}[command]
    assert flag in result.stdout and "was imported" not in result.stderr, result.stderr[-2000:]
    assert seconds < BOUND_SECONDS, seconds


def test_a_quiet_start_and_tensorflows_lines_with_verbosity_1(tmp_path, cache_dir):
    """A command that loads TensorFlow (a small conversion) says nothing of it; --verbosity=1 shows
    TensorFlow's start-up lines again."""
    from images import encode_bmp

    import numpy as np

    for c in range(2):
        (tmp_path / "photos" / f"class_{c}").mkdir(parents=True)
        for i in range(3):
            pixels = np.full((8, 8, 3), 40 * (c + i), np.uint8)
            (tmp_path / "photos" / f"class_{c}" / f"{i}.bmp").write_bytes(encode_bmp(pixels))
    flags = ["--source=folder", f"--input_dir={tmp_path / 'photos'}", "--validation_fraction=0.34"]
    quiet = run("convert", *flags, f"--output_dir={tmp_path / 'a'}", cache_dir=cache_dir)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout.splitlines()[-1].startswith("Wrote 4 train, 2 validation records of 2 classes")
    loud = run("convert", *flags, f"--output_dir={tmp_path / 'b'}", "--verbosity=1", cache_dir=cache_dir)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert any("All log messages before absl::InitializeLog()" in line for line in chatter_in(loud.stderr))
