"""The training input pipeline's images/s on ImageNet-sized JPEGs, against two named peers.

    nice -n 10 python3 benchmarks/input_pipeline.py [--quick]

Synthetic photos (500x375, JPEG quality 90) are written as record shards (for `build_dataset`; each
photo 4-8 times, so that an epoch is several shuffle buffers long, as on ImageNet) and as class
folders (for Keras). Each pipeline runs with tf.data limited to 1
and to 2 threads (private thread pool, no intra-op parallelism), several interleaved rounds, best
round kept (other jobs on the machine only ever slow a round down):

- ours: `build_dataset(training=True)` at 224x224: records, Inception crop on the encoded bytes
  (`decode_and_crop_jpeg`), flip, resize, [-1, 1], batches.
- decode (the bound): the same JPEG bytes from memory, each decoded fully, nothing else.
- keras: what a Keras user writes: `keras.utils.image_dataset_from_directory(image_size=256)` then
  `RandomCrop(224)`, `RandomFlip`, `Rescaling(1/127.5, offset=-1)`.

Then where the time of one training image goes (1 thread, ms per image, the same JPEGs from
memory): the full decode, the crop decode (`decode_and_crop_jpeg` on the Inception windows), each
step of `train_image` added in turn, and the records/shuffle/parse/batch remainder; and what a
`decode_and_crop_jpeg` of the top half, the bottom half and the left half of the image costs (the
decoder stops below the window's last row but entropy-decodes every row above it, and every column).

The last line is JSON: ours / decode and ours / keras at each thread count (goal: >= 1.0 and >= 1.5),
by wall clock and by images per CPU-second of the process (steadier when other jobs share the
machine; at 2 threads it measures cost, not speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf.config import DataConfig  # noqa: E402
from mobilenet_tf.data import pipeline, preprocess, tfrecord  # noqa: E402

HEIGHT, WIDTH, QUALITY = 375, 500, 90
IMAGE_SIZE = (224, 224)
BATCH = 64
CLASSES = 4
SHUFFLE_BUFFER = 1024


def photo(index: int) -> np.ndarray:
    """A smooth random scene with fine texture: compresses like a photo (~80 KB at quality 90)."""
    rng = np.random.default_rng(index)
    coarse = tf.image.resize(rng.normal(size=(1, 10, 14, 3)).astype(np.float32), (HEIGHT, WIDTH), "bicubic")[0]
    detail = tf.image.resize(rng.normal(size=(1, 60, 80, 3)).astype(np.float32), (HEIGHT, WIDTH), "bilinear")[0]
    pixels = 128 + 50 * coarse.numpy() + 20 * detail.numpy() + rng.normal(0, 12, (HEIGHT, WIDTH, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_data(root: str, num_images: int, copies: int) -> tuple[list[bytes], tfrecord.DatasetInfo, str]:
    """The JPEGs; record shards holding each `copies` times (so that an epoch is much longer than
    the shuffle buffer, as on ImageNet); class folders holding each once."""
    jpegs = [tf.io.encode_jpeg(photo(i), quality=QUALITY).numpy() for i in range(num_images)]
    records_dir, folders_dir = os.path.join(root, "records"), os.path.join(root, "folders")
    os.makedirs(records_dir)
    records = [tfrecord.make_example(j, label=i % CLASSES, height=HEIGHT, width=WIDTH, channels=3,
                                     image_format="JPEG") for i, j in enumerate(jpegs)] * copies
    shards = 8
    for s in range(shards):
        tfrecord.write_shard(os.path.join(records_dir, tfrecord.shard_name("train", s, shards)), records[s::shards])
    info = tfrecord.DatasetInfo(name="synthetic", num_classes=CLASSES, class_names=tuple(map(str, range(CLASSES))),
                                counts={"train": len(records)})
    tfrecord.write_info(records_dir, info)
    for i, j in enumerate(jpegs):
        folder = os.path.join(folders_dir, f"class_{i % CLASSES}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:05d}.jpg"), "wb") as f:
            f.write(j)
    return jpegs, tfrecord.read_info(records_dir), folders_dir


def limit_threads(ds: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def ours(info, threads):
    ds = pipeline.build_dataset(info, DataConfig(dataset="synthetic", shuffle_buffer=SHUFFLE_BUFFER), split="train",
                                global_batch_size=BATCH, image_size=IMAGE_SIZE, training=True, epochs=(0, 10_000))
    return limit_threads(ds, threads)


def decode_bound(jpegs, threads):
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat()
    # The shape depends on the decoded tensor, so the decode runs; only BATCH shapes reach Python.
    ds = ds.map(lambda j: tf.shape(tf.io.decode_jpeg(j, channels=3)), num_parallel_calls=tf.data.AUTOTUNE)
    return limit_threads(ds.batch(BATCH).prefetch(tf.data.AUTOTUNE), threads)


def keras_user(folders_dir, threads):
    import keras

    ds = keras.utils.image_dataset_from_directory(folders_dir, image_size=(256, 256), batch_size=BATCH, shuffle=True,
                                                  seed=0, verbose=False)
    augment = keras.Sequential([keras.layers.RandomCrop(*IMAGE_SIZE), keras.layers.RandomFlip("horizontal"),
                                keras.layers.Rescaling(1 / 127.5, offset=-1)])
    ds = ds.repeat().map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return limit_threads(ds.prefetch(tf.data.AUTOTUNE), threads)


def stage_costs(jpegs: list[bytes], rounds: int, count: int) -> dict[str, float]:
    """ms per image at 1 thread of each step of the training map, cumulative, best of `rounds`."""
    data = DataConfig(dataset="synthetic")
    seeds = np.stack([np.zeros(len(jpegs), np.int64), np.arange(len(jpegs))], axis=1)
    source = tf.data.Dataset.from_tensor_slices((jpegs, seeds)).cache().repeat()
    height, width = HEIGHT, WIDTH

    def crop(encoded, seed):
        return preprocess.decode_window(encoded, lambda shape: preprocess.inception_window(
            shape, seed, data.crop_area_range, data.crop_aspect_range, data.eval_crop_fraction))

    def fixed(window):
        return lambda encoded, seed: tf.image.decode_and_crop_jpeg(encoded, tf.constant(window), channels=3)

    def flipped(encoded, seed):
        return tf.image.stateless_random_flip_left_right(crop(encoded, seed), seed)

    steps = {  # each output is read at its last pixel, so no step can be pruned away
        "full decode": lambda encoded, seed: tf.io.decode_jpeg(encoded, channels=3),
        "full decode + resize (no crop)": lambda encoded, seed: preprocess.resize(
            tf.io.decode_jpeg(encoded, channels=3), IMAGE_SIZE),
        "crop decode": crop,
        "+ flip": flipped,
        "+ resize": lambda encoded, seed: preprocess.resize(flipped(encoded, seed), IMAGE_SIZE),
        "+ [-1, 1] (train_image)": lambda encoded, seed: preprocess.train_image(encoded, seed, IMAGE_SIZE, data),
        "top half only": fixed([0, 0, height // 2, width]),
        "bottom half only": fixed([height - height // 2, 0, height // 2, width]),
        "left half only": fixed([0, 0, height, width // 2]),
    }
    best = {}
    for _ in range(rounds):
        for name, step in steps.items():
            ds = limit_threads(source.map(lambda e, s, step=step: step(e, s)[-1, -1], num_parallel_calls=1), 1)
            iterator = iter(ds.prefetch(4))
            for _ in range(10):
                next(iterator)
            started = time.perf_counter()
            for _ in range(count):
                next(iterator)
            best[name] = min(best.get(name, np.inf), (time.perf_counter() - started) / count * 1e3)
    return best


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def images_per_second(ds, batches: int) -> tuple[float, float]:
    """(images/s, images per CPU-second of this process)."""
    iterator = iter(ds)
    for _ in range(2):  # warm-up: tracing, thread start, autotuning, shuffle buffer
        next(iterator)
    started, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - started), batches * BATCH / (cpu_seconds() - cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (under a minute)")
    args = parser.parse_args()
    num_images, batches, rounds = (256, 6, 2) if args.quick else (1024, 20, 3)
    copies = 8 if args.quick else 4
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}; "
          f"{num_images} JPEGs {WIDTH}x{HEIGHT} q{QUALITY}, batch {BATCH}, best of {rounds} rounds")
    with tempfile.TemporaryDirectory() as root:
        jpegs, info, folders_dir = make_data(root, num_images, copies)
        print(f"mean JPEG size {np.mean([len(j) for j in jpegs]) / 1000:.0f} KB")
        makers = {"ours": lambda t: ours(info, t), "decode": lambda t: decode_bound(jpegs, t),
                  "keras": lambda t: keras_user(folders_dir, t)}
        best = {}
        for _ in range(rounds):
            for threads in (1, 2):
                for name, make in makers.items():
                    rates = images_per_second(make(threads), batches)
                    best[(name, threads)] = tuple(max(a, b) for a, b in zip(best.get((name, threads), (0, 0)), rates))
        costs = stage_costs(jpegs, rounds, 150 if args.quick else 400)
    for threads in (1, 2):
        rates = [best[(name, threads)] for name in makers]
        print(f"{threads} thread(s): " + "  ".join(
            f"{name} {wall:.0f} img/s ({cpu:.0f} img/CPU-s)" for name, (wall, cpu) in zip(makers, rates)))
    ours_ms = 1e3 / best[("ours", 1)][0]
    costs["+ records, shuffle, parse, batch (ours)"] = ours_ms
    print("where one training image's time goes, 1 thread (ms; cumulative from 'crop decode'):")
    for name, ms in costs.items():
        print(f"  {name:40s} {ms:6.3f}  ({ms / costs['full decode']:.2f}x full decode)")
    ratios = {}
    for threads in (1, 2):
        for peer in ("decode", "keras"):
            mine, theirs = best[("ours", threads)], best[(peer, threads)]
            ratios[f"ours_vs_{peer}_{threads}t"] = round(mine[0] / theirs[0], 3)
            ratios[f"ours_vs_{peer}_{threads}t_cpu"] = round(mine[1] / theirs[1], 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
