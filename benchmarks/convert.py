"""The converter's images/s per worker, against decoding each input once (its floor of work).

    nice -n 10 python3 benchmarks/convert.py [--quick]

Synthetic ImageNet-sized photos (500x375, JPEG quality 90) in ROOT/train/<wnid>/ and ROOT/val/<wnid>/.
Every input has to be decoded once (that is how broken files are found), so the peer is:

- decode: read each file and `tf.io.decode_jpeg` it, in one process, nothing else.
- convert, 1 worker: `convert.write(num_workers=0)`, the same per-image work as one worker process
  (read, decode, check, Example, write the shard), measured in this process on the files listed 4
  times; best of the rounds, interleaved with the peer's.
- convert, N workers: `convert.write(num_workers=N)` (processes) on the files listed 30 times,
  images/s between 25% and 90% done (worker start-up excluded: it is paid once per run), against
  N processes decoding their share of the files at the same time.

The converter beats its peer because an RGB JPEG, copied as it is, is checked by a 1/8-scale decode
(all the entropy decoding, where errors arise; little of the rest; see convert.encode_image).
The last line is JSON: convert / decode per worker (goal >= 0.9), by wall clock and by CPU time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_pipeline import QUALITY, photo  # noqa: E402

from mobilenet_tf.data import convert, plan  # noqa: E402

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")


def make_tree(root: str, num_images: int) -> list[str]:
    paths = []
    for i in range(num_images):
        split = "val" if i % 10 == 0 else "train"
        folder = os.path.join(root, split, WNIDS[i % len(WNIDS)])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{WNIDS[i % len(WNIDS)]}_{i}.JPEG")
        with open(path, "wb") as f:
            f.write(tf.io.encode_jpeg(photo(i), quality=QUALITY).numpy())
        paths.append(path)
    return paths


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_once(paths: list[str]) -> tuple[float, float]:
    """(images/s, images per CPU-second) of reading and decoding every file once."""
    started, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        with open(path, "rb") as f:
            tf.io.decode_jpeg(f.read(), channels=3)
    return len(paths) / (time.perf_counter() - started), len(paths) / (cpu_seconds() - cpu)


_barrier = None


def _init_decoder(barrier) -> None:
    global _barrier
    _barrier = barrier
    tf.config.threading.set_intra_op_parallelism_threads(1)


def _decode_chunk(paths: list[str]) -> float:
    _barrier.wait()  # all workers decode at the same time, as the converter's do
    return decode_once(paths)[0]


def decode_workers(paths: list[str], workers: int) -> float:
    """Images/s of `workers` processes decoding their share of `paths` at the same time."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_decoder, initargs=(context.Barrier(workers),)) as pool:
        return sum(pool.map(_decode_chunk, [paths[w::workers] for w in range(workers)], chunksize=1))


def convert_in_process(plan, out: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), cpu_seconds()
    convert.write(plan, out, shards={"train": 4, "validation": 1}, num_workers=0)
    total = sum(len(items) for items in plan.splits.values())
    return total / (time.perf_counter() - started), total / (cpu_seconds() - cpu)


def convert_workers(plan, out: str, workers: int) -> float:
    """Images/s while every worker runs: between 25% and 90% done (start-up and the tail excluded)."""
    shutil.rmtree(out, ignore_errors=True)
    marks = []
    convert.write(plan, out, shards={"train": 4 * workers, "validation": workers}, num_workers=workers,
                  progress=lambda done, total: marks.append((time.perf_counter(), done / total)))
    window = [(t, d) for t, d in marks if 0.25 <= d <= 0.9]
    (t0, d0), (t1, d1) = window[0], window[-1]
    total = sum(len(items) for items in plan.splits.values())
    return (d1 - d0) * total / (t1 - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (under a minute)")
    args = parser.parse_args()
    num_images, rounds = (200, 2) if args.quick else (1000, 3)
    workers = convert.default_num_workers()
    tf.config.threading.set_intra_op_parallelism_threads(1)  # one worker's worth of CPU, like a worker process
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}; "
          f"{num_images} JPEGs 500x375 q{QUALITY}; best of {rounds} rounds")
    with tempfile.TemporaryDirectory() as root:
        paths = make_tree(os.path.join(root, "ILSVRC"), num_images)
        layout = plan.plan_imagenet(os.path.join(root, "ILSVRC"))
        # Each file listed several times: runs long enough that fixed costs (the pool, the state
        # files, dataset_info.json; worker start-up below) are not what is measured.
        several = dataclasses.replace(layout, splits={split: items * 4 for split, items in layout.splits.items()})
        best = {}
        for _ in range(rounds):
            for name, run in (("decode", lambda: decode_once(paths * 4)),
                              ("convert", lambda: convert_in_process(several, os.path.join(root, "out")))):
                wall, cpu = run()
                best[name] = tuple(max(a, b) for a, b in zip(best.get(name, (0.0, 0.0)), (wall, cpu)))
        many = dataclasses.replace(layout, splits={split: items * 30 for split, items in layout.splits.items()})
        parallel = convert_workers(many, os.path.join(root, "out"), workers)
        parallel_decode = decode_workers(paths * 15, workers)
    print(f"decode once: {best['decode'][0]:.0f} img/s ({best['decode'][1]:.0f} img/CPU-s)")
    print(f"convert, 1 worker: {best['convert'][0]:.0f} img/s ({best['convert'][1]:.0f} img/CPU-s)")
    print(f"decode once, {workers} processes: {parallel_decode:.0f} img/s")
    print(f"convert, {workers} worker processes: {parallel:.0f} img/s ({parallel / workers:.0f} per worker)")
    print(json.dumps({
        "convert_vs_decode_1worker": round(best["convert"][0] / best["decode"][0], 3),
        "convert_vs_decode_1worker_cpu": round(best["convert"][1] / best["decode"][1], 3),
        f"convert_vs_decode_{workers}workers": round(parallel / parallel_decode, 3),
    }))


if __name__ == "__main__":
    main()
