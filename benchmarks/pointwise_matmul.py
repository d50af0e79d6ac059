"""Our training step with its 1x1 convolutions as MatMul against the same step with them as Conv2D.

    nice -n 10 python3 benchmarks/pointwise_matmul.py [--model=mobilenet_v3_small] [--size=128] [--precision=float32]

On a CPU `train.build_train_model` prepares the model's 1x1 stride-1 Conv2D layers to run as one
MatMul inside the training step (`layers.pointwise_convolutions_as_matmul`). The peer is that same
step traced with them as Conv2D (oneDNN's Conv2D and Conv2DBackpropInput/Filter), the way it ran
before. Both loops (`train.make_train_loop` on one in-memory batch, global batch 32, RMSProp: as
train_throughput.py's step alone) live in one process and are timed in alternating runs, so the
VM's drift (up to 50% here between runs minutes apart) falls on both. The last line is JSON with
the images/s of every run and the ratio of the medians (MatMul / Conv2D).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from unittest import mock

import tensorflow as tf

from train_throughput import BATCH, PRESETS, in_memory_loop

from mobilenet_tf.models import layers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="mobilenet_v3_small", help="architecture (width 1.0)")
    parser.add_argument("--size", type=int, default=128, help="image size")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each step")
    args = parser.parse_args()

    loops = {}
    for name in ("conv2d", "matmul"):
        # The Conv2D step: traced with the scope that switches the prepared layers to MatMul off.
        with mock.patch.object(layers, "pointwise_as_matmul", contextlib.nullcontext) if name == "conv2d" \
                else contextlib.nullcontext():
            loop, iterator, _ = in_memory_loop(args.model, args.size, args.precision)
            loop(iterator, tf.constant(2))  # trace
        loops[name] = loop, iterator
    rates = {name: [] for name in loops}
    for i in range(args.rounds):
        for name in sorted(loops, reverse=i % 2 == 1):
            loop, iterator = loops[name]
            started = time.perf_counter()
            loop(iterator, tf.constant(args.steps))
            rates[name].append(round(args.steps * BATCH / (time.perf_counter() - started), 1))
    print(json.dumps({
        "model": f"{args.model} 1.0 {args.size}", "precision": args.precision, "global_batch": BATCH,
        "conv2d_img_s": rates["conv2d"], "matmul_img_s": rates["matmul"],
        "ratio_matmul_vs_conv2d": round(statistics.median(rates["matmul"]) / statistics.median(rates["conv2d"]), 3),
    }))


if __name__ == "__main__":
    main()
