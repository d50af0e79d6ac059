"""Training and evaluation images from 12-megapixel JPEGs: DCT-scaled decoding against full scale.

    nice -n 10 python3 benchmarks/large_photos.py [--quick]

The photos are a phone camera's 4032x3024 at quality 90: the two photos bundled with scikit-learn,
enlarged, with a little sensor noise. Per image on 1 thread (tf.data map, interleaved rounds, medians):

- ours: `train_image` / `eval_pixels` at 224x224, which decode a JPEG window at 1/2, 1/4 or 1/8
  scale when it is at least twice the output size (libjpeg's DCT scaling).
- full scale (the peer): the same windows decoded at full scale with `decode_and_crop_jpeg`, then
  the same bilinear resize: what TF Model Garden's Inception crop does.

It also prints how far each is from an antialiased resize (`antialias=True`) of the full-scale
window, in 0-255 levels (mean absolute difference): the bilinear resize from full scale aliases.
The last line is JSON: ours / full scale in images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf.config import DataConfig  # noqa: E402
from mobilenet_tf.data import preprocess  # noqa: E402

from input_pipeline import per_image_timer  # noqa: E402  (this script's directory is on sys.path)

HEIGHT, WIDTH, QUALITY = 3024, 4032, 90
IMAGE_SIZE = (224, 224)


def photos(count: int) -> list[bytes]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    images = load_sample_images().images
    jpegs = []
    for i in range(count):
        big = tf.image.resize(images[i % 2][None].astype(np.float32), (HEIGHT, WIDTH), "bicubic")[0].numpy()
        big = big + rng.normal(0, 3, big.shape)
        jpegs.append(tf.io.encode_jpeg(np.clip(big, 0, 255).astype(np.uint8), quality=QUALITY).numpy())
    return jpegs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and rounds (under a minute)")
    args = parser.parse_args()
    count, rounds, per_round = (4, 3, 8) if args.quick else (8, 5, 16)
    data = DataConfig()

    def train_window(seed):
        return lambda shape: preprocess.inception_window(
            shape, seed, data.crop_area_range, data.crop_aspect_range, data.eval_crop_fraction)

    def eval_window(shape):
        return preprocess.center_window(shape, data.eval_crop_fraction)

    # (encoded, seed) -> float32 [224, 224, 3] in 0..255; the training ones without flip and [-1, 1].
    steps = {
        ("train", "ours"): lambda e, s: preprocess.resize(preprocess.decode_window(e, train_window(s), IMAGE_SIZE),
                                                          IMAGE_SIZE),
        ("train", "full scale"): lambda e, s: preprocess.resize(preprocess.decode_window(e, train_window(s)),
                                                                IMAGE_SIZE),
        ("eval", "ours"): lambda e, s: preprocess.eval_pixels(e, IMAGE_SIZE, data.eval_crop_fraction),
        ("eval", "full scale"): lambda e, s: preprocess.resize(preprocess.decode_window(e, eval_window), IMAGE_SIZE),
    }
    reference = {  # antialiased resize of the same full-scale window
        "train": lambda e, s: tf.image.resize(preprocess.decode_window(e, train_window(s)), IMAGE_SIZE, antialias=True),
        "eval": lambda e, s: tf.image.resize(preprocess.decode_window(e, eval_window), IMAGE_SIZE, antialias=True),
    }

    jpegs = photos(count)
    print(f"{count} JPEGs {WIDTH}x{HEIGHT} q{QUALITY}, mean {np.mean([len(j) for j in jpegs]) / 1e6:.1f} MB; "
          f"TensorFlow {tf.__version__}, {os.cpu_count()} cores, 1 thread")
    seeds = np.stack([np.zeros(count, np.int64), np.arange(count)], axis=1)
    source = tf.data.Dataset.from_tensor_slices((jpegs, seeds)).cache().repeat()
    timers = {key: per_image_timer(source, step, per_round, warmup=1, prefetch=1) for key, step in steps.items()}
    times = {key: [] for key in steps}
    for _ in range(rounds):
        for key, run in timers.items():
            times[key].append(run())
    ratios = {}
    for kind in ("train", "eval"):
        errors = {}
        for who in ("ours", "full scale"):
            errors[who] = np.mean([
                tf.reduce_mean(tf.abs(steps[(kind, who)](jpeg, seed) - reference[kind](jpeg, seed))).numpy()
                for jpeg, seed in zip(jpegs, tf.constant(seeds))])
        ours, peer = np.median(times[(kind, "ours")]), np.median(times[(kind, "full scale")])
        print(f"{kind}: ours {ours:.1f} ms/image, full scale {peer:.1f} ms/image; off an antialiased resize by "
              f"{errors['ours']:.2f} / {errors['full scale']:.2f} levels")
        ratios[f"ours_vs_full_scale_{kind}"] = round(peer / ours, 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
