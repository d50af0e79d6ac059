"""docs/quantization.md's recipe as written, on README's main job: its own module, so that pytest-xdist
runs its ~7 minutes beside test_qat.py's trained runs."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf import config, tflite
from mobilenet_tf.checkpoint import restore_model

from clis import chatter_in, env_for, run, runnable_blocks
from images import held_out_pixels


@pytest.mark.slow  # the default digits run (~2 min), its QAT fine-tune and export; CI runs it
def test_digits_recipe_qat_int8_matches_float(tmp_path, cache_dir):
    """docs/quantization.md's block as written (test_docs leaves it to this test): README's main job
    (`mobilenet-train`, no flags: >= 0.95 held-out top-1, a quiet start) -> --qat --epochs=3 ->
    --tflite=int8 -> eval of the int8 model, which must score as the float."""
    block, = runnable_blocks("docs/quantization.md")
    result = subprocess.run(["bash", "-c", f"set -e -o pipefail\n{block}"], cwd=tmp_path, env=env_for(cache_dir),
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{block}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert not chatter_in(result.stderr), chatter_in(result.stderr)
    float_dir, qat_dir = tmp_path / "runs" / "mobilenet_v2_digits", tmp_path / "runs" / "mobilenet_v2_digits_qat"
    assert float(re.search(r"held-out top-1 ([0-9.]+)", result.stdout).group(1)) >= 0.95
    assert os.path.isfile(float_dir / "export" / "1" / "saved_model.pb")
    scores = {"int8": json.loads(result.stdout.splitlines()[-1])["top1"],
              "float": json.loads(run("eval", f"--model_dir={float_dir}", cache_dir=cache_dir).stdout.splitlines()[-1])["top1"]}
    assert scores["int8"] >= scores["float"] - 0.005, scores

    model, cfg = restore_model(str(qat_dir))
    pixels, _ = held_out_pixels(cache_dir, cfg.model.image_size)
    pixels = np.floor(pixels + 0.5)
    served = tf.saved_model.load(str(qat_dir / "export" / "2")).signatures["serving_pixels"]
    probabilities = served(pixels=tf.constant(pixels))["probabilities"].numpy()
    int8 = tflite.LiteRTModel(str(qat_dir / "export" / "tflite" / "model_int8.tflite"))(pixels)
    assert np.mean(np.argmax(int8, 1) == np.argmax(probabilities, 1)) >= 0.99
    assert config.load(str(qat_dir)).model.qat
