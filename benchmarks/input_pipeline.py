"""The training input pipeline's images/s on ImageNet-sized JPEGs, against three named peers.

    nice -n 10 python3 benchmarks/input_pipeline.py [--quick] [--content=synthetic|photos]

Photos (500x375, JPEG quality 90) are written as record shards (for `build_dataset`; each photo 4-8
times, so that an epoch is several shuffle buffers long, as on ImageNet) and as class folders (for
Keras). `--content=synthetic` (default): smooth random scenes with fine texture and sensor-like
noise, ~80 KB each, about the bytes per pixel of ImageNet's JPEGs. `--content=photos`: random crops
of the two real photos bundled with scikit-learn (~48 KB each). Each pipeline runs with tf.data
limited to 1 and to 2 threads (private thread pool, no intra-op parallelism), several interleaved
rounds, best round kept (other jobs on the machine only ever slow a round down):

- ours: `build_dataset(training=True)` at 224x224: records, Inception crop on the encoded bytes
  (`decode_and_crop_jpeg`), resize, flip, [-1, 1], batches.
- decode (the bound): the same JPEG bytes from memory, each decoded fully, nothing else.
- decode + resize: the same, each decoded fully and resized to 224x224 (bilinear), nothing else:
  what a pipeline without the crop-on-the-bytes trick does at the least.
- keras: what a Keras user writes: `keras.utils.image_dataset_from_directory(image_size=256)` then
  `RandomCrop(224)`, `RandomFlip`, `Rescaling(1/127.5, offset=-1)`.

Each peer runs with tf.data's map-and-batch fusion on and off, and keeps its better round (off is
~10% faster for a bare decode at 1 thread here); ours runs as `build_dataset` builds it.

Then where the time of one training image goes (1 thread, ms per image, the same JPEGs from
memory): the full decode, the crop decode (`decode_and_crop_jpeg` on the Inception windows), each
step of `train_image` added in turn, and the records/shuffle/parse/batch remainder (the first step,
crop decode + resize, is the floor of any pipeline that crops with `decode_and_crop_jpeg` and resizes
with TF's bilinear kernel); and what a `decode_and_crop_jpeg` of the top half, the bottom half, the left half
and a 16x16 square at the bottom right costs (the decoder stops below the window's last row but
entropy-decodes every row above it, and every column: the last is almost all entropy decoding).

The last line is JSON: ours / decode, ours / decode + resize and ours / keras at each thread count
(goal: >= 1.0 against decode and >= 1.5 against keras), by wall clock and by images per CPU-second
of the process (steadier when other jobs share the machine; at 2 threads it measures cost, not
speed).
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
from mobilenet_tf import paths  # noqa: E402
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


def real_photo(index: int) -> np.ndarray:
    """A random crop (70-100% of the height, 4:3), maybe mirrored, of one of scikit-learn's two
    bundled 640x427 photos, resized to 500x375."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(index)
    image = load_sample_images().images[index % 2]
    height = int(rng.uniform(0.7, 1.0) * image.shape[0])
    width = min(image.shape[1], height * 4 // 3)
    y, x = rng.integers(0, image.shape[0] - height + 1), rng.integers(0, image.shape[1] - width + 1)
    crop = image[y : y + height, x : x + width][:, :: rng.choice([1, -1])]
    resized = tf.image.resize(crop, (HEIGHT, WIDTH), antialias=True).numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


CONTENT = {"synthetic": photo, "photos": real_photo}


def make_data(root: str, num_images: int, copies: int, content=photo):
    """(JPEGs of `content(i)`, the DatasetInfo of record shards holding each `copies` times (so that an
    epoch is much longer than the shuffle buffer, as on ImageNet), class folders holding each once)."""
    jpegs = [tf.io.encode_jpeg(content(i), quality=QUALITY).numpy() for i in range(num_images)]
    records_dir, folders_dir = os.path.join(root, "records"), os.path.join(root, "folders")
    os.makedirs(records_dir)
    records = [tfrecord.make_example(j, label=i % CLASSES, height=HEIGHT, width=WIDTH, channels=3,
                                     image_format="JPEG") for i, j in enumerate(jpegs)] * copies
    shards = 8
    for s in range(shards):
        tfrecord.write_shard(os.path.join(records_dir, paths.shard_name("train", s, shards)), records[s::shards])
    info = tfrecord.DatasetInfo(name="synthetic", num_classes=CLASSES, class_names=tuple(map(str, range(CLASSES))),
                                counts={"train": len(records)})
    tfrecord.write_info(records_dir, info)
    for i, j in enumerate(jpegs):
        folder = os.path.join(folders_dir, f"class_{i % CLASSES}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:05d}.jpg"), "wb") as f:
            f.write(j)
    return jpegs, tfrecord.read_info(records_dir), folders_dir


def limit_threads(ds: tf.data.Dataset, threads: int, fuse: bool = True) -> tf.data.Dataset:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_and_batch_fusion = fuse
    return ds.with_options(options)


def ours(info, threads):
    ds = pipeline.build_dataset(info, DataConfig(dataset="synthetic", shuffle_buffer=SHUFFLE_BUFFER), split="train",
                                global_batch_size=BATCH, image_size=IMAGE_SIZE, training=True, epochs=(0, 10_000))
    return limit_threads(ds, threads)


def decode_bound(jpegs, threads, fuse, resize=False):
    ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat()
    if resize:
        decode = lambda j: preprocess.resize(tf.io.decode_jpeg(j, channels=3), IMAGE_SIZE)  # noqa: E731
    else:  # the shape depends on the decoded tensor, so the decode runs; only BATCH shapes reach Python
        decode = lambda j: tf.shape(tf.io.decode_jpeg(j, channels=3))  # noqa: E731
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return limit_threads(ds.batch(BATCH).prefetch(tf.data.AUTOTUNE), threads, fuse)


def keras_user(folders_dir, threads, fuse):
    import keras

    ds = keras.utils.image_dataset_from_directory(folders_dir, image_size=(256, 256), batch_size=BATCH, shuffle=True,
                                                  seed=0, verbose=False)
    augment = keras.Sequential([keras.layers.RandomCrop(*IMAGE_SIZE), keras.layers.RandomFlip("horizontal"),
                                keras.layers.Rescaling(1 / 127.5, offset=-1)])
    ds = ds.repeat().map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return limit_threads(ds.prefetch(tf.data.AUTOTUNE), threads, fuse)


def per_image_timer(source: tf.data.Dataset, step, count: int, warmup: int = 10, prefetch: int = 4):
    """A function returning the ms per image of `step(encoded, seed)` over `count` elements of
    `source`, on 1 thread. Each call times a new iterator of the same (traced once) dataset."""
    ds = limit_threads(source.map(lambda e, s: step(e, s)[-1, -1], num_parallel_calls=1), 1).prefetch(prefetch)

    def block():
        iterator = iter(ds)
        for _ in range(warmup):
            next(iterator)
        started = time.perf_counter()
        for _ in range(count):
            next(iterator)
        return (time.perf_counter() - started) / count * 1e3

    return block


def stage_costs(jpegs: list[bytes], info, rounds: int, count: int) -> dict[str, tuple[float, float]]:
    """{step: (ms per image, multiple of a full decode)} at 1 thread, medians over `rounds` rounds.

    Each round times every step back to back (`count` images each), so a step's multiple of the full
    decode is taken within a round: steadier than comparing times from different moments.
    """
    data = DataConfig(dataset="synthetic")
    seeds = np.stack([np.zeros(len(jpegs), np.int64), np.arange(len(jpegs))], axis=1)
    source = tf.data.Dataset.from_tensor_slices((jpegs, seeds)).cache().repeat()
    height, width = HEIGHT, WIDTH

    def crop(encoded, seed):
        return preprocess.decode_window(encoded, lambda shape: preprocess.inception_window(
            shape, seed, data.crop_area_range, data.crop_aspect_range, data.eval_crop_fraction), IMAGE_SIZE)

    def fixed(window):
        return lambda encoded, seed: tf.image.decode_and_crop_jpeg(encoded, tf.constant(window), channels=3)

    def resized(encoded, seed):
        return preprocess.resize(crop(encoded, seed), IMAGE_SIZE)

    steps = {  # each output is read at its last pixel, so no step can be pruned away
        "full decode": lambda encoded, seed: tf.io.decode_jpeg(encoded, channels=3),
        "full decode + resize (no crop)": lambda encoded, seed: preprocess.resize(
            tf.io.decode_jpeg(encoded, channels=3), IMAGE_SIZE),
        "crop decode": crop,
        "+ resize (the floor: crop decode + resize)": resized,
        "+ flip": lambda encoded, seed: tf.image.stateless_random_flip_left_right(resized(encoded, seed), seed),
        "+ [-1, 1] (train_image)": lambda encoded, seed: preprocess.train_image(encoded, seed, IMAGE_SIZE, data),
        "top half only": fixed([0, 0, height // 2, width]),
        "bottom half only": fixed([height - height // 2, 0, height // 2, width]),
        "left half only": fixed([0, 0, height, width // 2]),
        "16x16 at the bottom right only": fixed([height - 16, width - 16, 16, 16]),
    }

    blocks = {name: per_image_timer(source, step, count) for name, step in steps.items()}
    whole = "+ records, shuffle, parse, batch (ours)"
    whole_ds = ours(info, 1)
    blocks[whole] = lambda: 1e3 / images_per_second(whole_ds, max(2, count // BATCH))[0]
    order = list(blocks)
    order.insert(order.index("+ [-1, 1] (train_image)") + 1, order.pop())
    times = {name: [] for name in order}
    for _ in range(rounds):
        for name in order:
            times[name].append(blocks[name]())
    full = np.array(times["full decode"])
    return {name: (float(np.median(ms)), float(np.median(np.array(ms) / full))) for name, ms in times.items()}


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
    parser.add_argument("--content", choices=sorted(CONTENT), default="synthetic", help="what the JPEGs show")
    args = parser.parse_args()
    num_images, batches, rounds = (256, 6, 2) if args.quick else (1024, 20, 3)
    copies = 8 if args.quick else 4
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}; "
          f"{num_images} {args.content} JPEGs {WIDTH}x{HEIGHT} q{QUALITY}, batch {BATCH}, best of {rounds} rounds")
    with tempfile.TemporaryDirectory() as root:
        jpegs, info, folders_dir = make_data(root, num_images, copies, CONTENT[args.content])
        print(f"mean JPEG size {np.mean([len(j) for j in jpegs]) / 1000:.0f} KB")
        makers = {"ours": lambda t, fuse: ours(info, t), "decode": lambda t, fuse: decode_bound(jpegs, t, fuse),
                  "decode + resize": lambda t, fuse: decode_bound(jpegs, t, fuse, resize=True),
                  "keras": lambda t, fuse: keras_user(folders_dir, t, fuse)}
        best = {}
        for _ in range(rounds):
            for threads in (1, 2):
                for name, make in makers.items():
                    for fuse in (True,) if name == "ours" else (True, False):
                        rates = images_per_second(make(threads, fuse), batches)
                        best[(name, threads)] = tuple(max(a, b) for a, b in zip(best.get((name, threads), (0, 0)),
                                                                                rates))
        costs = stage_costs(jpegs, info, 4 if args.quick else 10, 60 if args.quick else 128)
    for threads in (1, 2):
        rates = [best[(name, threads)] for name in makers]
        print(f"{threads} thread(s): " + "  ".join(
            f"{name} {wall:.0f} img/s ({cpu:.0f} img/CPU-s)" for name, (wall, cpu) in zip(makers, rates)))
    print("where one training image's time goes, 1 thread (ms; cumulative from 'crop decode' to 'ours'; medians):")
    for name, (ms, multiple) in costs.items():
        print(f"  {name:40s} {ms:6.3f}  ({multiple:.2f}x full decode)")
    ratios = {}
    for threads in (1, 2):
        for peer in ("decode", "decode + resize", "keras"):
            mine, theirs = best[("ours", threads)], best[(peer, threads)]
            key = peer.replace(" + ", "_")
            ratios[f"ours_vs_{key}_{threads}t"] = round(mine[0] / theirs[0], 3)
            ratios[f"ours_vs_{key}_{threads}t_cpu"] = round(mine[1] / theirs[1], 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
