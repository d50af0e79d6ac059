"""How close our evaluation pixels come to timm's evaluation transform, on real JPEGs.

    python3 benchmarks/timm_preprocessing.py      (needs the timm extra: pip install -e .[timm])

timm evaluates its checkpoints with PIL: the shorter side resized to `size / crop_pct` (bicubic,
antialiased), then the central `size` x `size` crop. Ours (`preprocess.eval_pixels`, what serving,
eval and predict run) for a timm checkpoint, `timm_bicubic`, does the same in TensorFlow
(`tf.image.resize(antialias=True)`, TensorFlow's JPEG decoder); for our own runs, `crop_bilinear`
crops the central `crop_pct` of the shorter side from the encoded JPEG, then resizes it
(bilinear). The photos are the two that scikit-learn bundles (640x427 JPEGs), as they are and
re-encoded at other sizes (quality 90).

For each of timm's evaluation settings it prints the mean absolute difference from timm's pixels
(0-255 levels) and its 99th percentile, for both of ours and, as a yardstick,
timm's own transform with bilinear instead of bicubic (a change timm's own results tables show
moving top-1). The last line is JSON: ours (timm_bicubic) against that yardstick.
"""

from __future__ import annotations

import io
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from timm.data import transforms_factory  # noqa: E402  (before TensorFlow: see tests/conftest.py)

from photos import SIZES, photos  # noqa: E402  (this script's directory is on sys.path)

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf.data import preprocess  # noqa: E402

# (input size, crop_pct) of timm's MobileNet checkpoints: most at 224/0.875, the ra4 and V4 ones
# at 0.95 (224, 256 and 384).
SETTINGS = ((224, 0.875), (224, 0.95), (256, 0.95), (384, 0.95))


def timm_pixels(jpeg: bytes, size: int, crop_pct: float, interpolation: str) -> np.ndarray:
    """timm's eval transform up to the crop (before ToTensor and normalization), in 0-255."""
    transform = transforms_factory.transforms_imagenet_eval(img_size=size, crop_pct=crop_pct,
                                                            interpolation=interpolation)
    resize, crop = transform.transforms[:2]
    return np.asarray(crop(resize(Image.open(io.BytesIO(jpeg)).convert("RGB"))), np.float32)


def differences(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    errors = np.concatenate([np.abs(x - y).ravel() for x, y in zip(a, b)])
    return float(errors.mean()), float(np.percentile(errors, 99))


def main():
    jpegs = photos()
    print(f"{len(jpegs)} JPEGs from scikit-learn's two photos at {', '.join(f'{w}x{h}' for h, w in SIZES)}; "
          f"TensorFlow {tf.__version__}, Pillow {Image.__version__}")
    result = {}
    for size, crop_pct in SETTINGS:
        timm_bicubic = [timm_pixels(j, size, crop_pct, "bicubic") for j in jpegs]
        timm_bilinear = [timm_pixels(j, size, crop_pct, "bilinear") for j in jpegs]
        ours = {transform: [preprocess.eval_pixels(tf.constant(j), (size, size), crop_pct, transform).numpy()
                            for j in jpegs] for transform in ("timm_bicubic", "crop_bilinear")}
        rows = {"ours timm_bicubic": differences(ours["timm_bicubic"], timm_bicubic),
                "ours crop_bilinear": differences(ours["crop_bilinear"], timm_bicubic),
                "timm bilinear": differences(timm_bilinear, timm_bicubic)}
        print(f"{size} crop {crop_pct}: off timm's bicubic pixels by " +
              "; ".join(f"{name} {mean:.2f} (p99 {p99:.1f})" for name, (mean, p99) in rows.items()))
        result[f"{size}_{crop_pct}"] = round(rows["ours timm_bicubic"][0] / rows["timm bilinear"][0], 3)
    print(json.dumps({"ours_vs_timm_bilinear_mean_difference": result}))


if __name__ == "__main__":
    main()
