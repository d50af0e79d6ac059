"""The --web page of a run exported straight from a timm checkpoint (V4-Hybrid-M), in Chromium:
its own module, since Playwright's sync API runs one instance at a time and test_web.py keeps one
open for its module."""
import json
import os

import numpy as np
import pytest

from mobilenet_tf import config, tflite

from clis import run
from test_web import CHROMIUM, data_url, served_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (CI installs Debian's chromium first)")


def test_a_timm_hybrid_checkpoint_runs_in_the_browser(tmp_path, cache_dir):
    """`mobilenet-export --pretrained=<a timm V4-Hybrid-M checkpoint> --web --web_model=float32`:
    attention in LiteRT.js, timm's evaluation transform in the page, ImageNet's 1000 names; the
    page's probabilities are Python LiteRT's on the pixels it computed."""
    timm_peer = pytest.importorskip("timm_peer", reason="the timm extra is not installed")

    checkpoint = tmp_path / "checkpoint"
    timm_peer.random_checkpoint("mobilenetv4_hybrid_medium", checkpoint, image_size=224)
    exported = run("export", f"--pretrained={checkpoint}", f"--model_dir={tmp_path / 'run'}", "--web",
                   "--web_model=float32", "--json", cache_dir=cache_dir)
    assert exported.returncode == 0, exported.stderr[-3000:]
    written = json.loads(exported.stdout.strip().splitlines()[-1])
    photo = os.path.join(os.path.dirname(__import__("sklearn.datasets").datasets.__file__), "images", "china.jpg")
    url = data_url(photo, "image/jpeg")
    with served_page(written["web"]) as page:
        top = page.evaluate("(u) => window.mobilenet.classify(u, Infinity)", url)
        seen = page.evaluate("async (u) => Array.from(await window.mobilenet.pixels(u))", url)
        assert page.refused == []
    assert len(top) == 1000
    height, width = config.load(str(tmp_path / "run")).model.image_size  # the checkpoint's: 256 for Hybrid-M
    pixels = np.array(seen, np.float32).reshape(1, height, width, 3)
    python = tflite.LiteRTModel(written["tflite"]["float32"])(pixels)[0]
    names = open(os.path.join(written["web"], "labels.txt")).read().splitlines()
    # ImageNet has two "crane"s and two "maillot"s: compare the scores sorted, and the winner.
    np.testing.assert_allclose(sorted(c["score"] for c in top), np.sort(python), rtol=0, atol=0.02)
    assert top[0]["label"] == names[int(np.argmax(python))]
