"""Our training step with one of its CPU changes against the same step without it.

    nice -n 10 python3 benchmarks/step_changes.py --change=kernels [--model=mobilenet_v3_small] [--size=128] [--precision=float32]

On a CPU the training step runs two changes of ours over TensorFlow's plain graph, each inside a
scope that `train.make_train_loop` enters:
- `matmul`: the model's 1x1 stride-1 Conv2D layers as one MatMul
  (`layers.pointwise_convolutions_as_matmul`); the peer runs them as oneDNN's Conv2D and
  Conv2DBackpropInput/Filter.
- `kernels`: the native kernels (`mobilenet_tf/kernels`: the depthwise convolutions' gradients and
  hard-swish); the peer runs TensorFlow's ops (oneDNN's depthwise backward kernels, hard-swish as
  four elementwise ops and their gradients).
The peer is the same step traced with that one scope switched off, the way it ran before. Both
loops (`train.make_train_loop` on one in-memory batch, global batch 32, RMSProp: as
train_throughput.py's step alone) live in one process and are timed in alternating runs, so the
VM's drift (up to 50% here between runs minutes apart) falls on both. The last line is JSON with
the images/s of every run and the ratio of the medians (with the change / without).
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

from mobilenet_tf import kernels
from mobilenet_tf.models import layers

# Each change: the module and name of the scope that switches it on.
CHANGES = {"matmul": (layers, "pointwise_as_matmul"), "kernels": (kernels, "native_ops")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--change", choices=sorted(CHANGES), default="kernels", help="the change timed")
    parser.add_argument("--model", choices=sorted(PRESETS), default="mobilenet_v3_small", help="architecture (width 1.0)")
    parser.add_argument("--size", type=int, default=128, help="image size")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each step")
    args = parser.parse_args()

    loops = {}
    for name in ("without", "with"):
        # The step without the change: traced with its scope replaced by one that does nothing.
        with mock.patch.object(*CHANGES[args.change], contextlib.nullcontext) if name == "without" \
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
        "change": args.change, "model": f"{args.model} 1.0 {args.size}", "precision": args.precision,
        "global_batch": BATCH, "without_img_s": rates["without"], "with_img_s": rates["with"],
        "ratio_with_vs_without": round(statistics.median(rates["with"]) / statistics.median(rates["without"]), 3),
    }))


if __name__ == "__main__":
    main()
