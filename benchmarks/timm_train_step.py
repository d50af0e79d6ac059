"""timm's training images/s, the peer of train_throughput.py (which runs this in a process of its own:
PyTorch's triton crashes a process that loaded TensorFlow first). Needs the timm extra.

    python3 benchmarks/timm_train_step.py ARCH SIZE STEPS [FOLDER]
    python3 benchmarks/timm_train_step.py ARCH SIZE STEPS --serve

timm's ARCH (random weights, 1000 classes) on PyTorch eager, channels_last, float32 (or bfloat16
autocast with --bf16), RMSprop, global batch 32, on every core (torch's threads = the CPU count):
without FOLDER the same batch, in memory, every step (the step alone); with FOLDER, timm's own
loader and training transforms (RandomResizedCrop, flip; `create_loader`, workers = CPU count)
on the JPEGs of its class folders. Prints one JSON line: {"img_s": ...}, the median over
intervals of 2 steps after 2 warm-up steps; with --profile also "profile_ms", each layer kind's
milliseconds per step (layer_kinds.py) from PyTorch's profiler over 3 more steps.
With --serve (the step alone, timed in turns with ours by train_throughput.py): after 2 warm-up
steps, each line read from stdin runs one untimed step (the first after a pause is slow) and
STEPS timed ones and prints {"img_s": ...} for those, until EOF; between lines the process waits
on its stdin and takes no CPU.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import timm
from timm.data import create_dataset, create_loader

from layer_kinds import KINDS, torch_kind

BATCH = 32


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("arch")
    parser.add_argument("size", type=int)
    parser.add_argument("steps", type=int)
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = timm.create_model(args.arch, num_classes=1000).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.008, alpha=0.9, momentum=0.9, eps=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    if args.folder:
        dataset = create_dataset("", root=args.folder, is_training=True)
        loader = create_loader(dataset, input_size=(3, args.size, args.size), batch_size=BATCH, is_training=True,
                               num_workers=os.cpu_count(), use_prefetcher=False, persistent_workers=True)

        def batches():
            while True:
                yield from loader
    else:
        x = torch.randn(BATCH, 3, args.size, args.size).to(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (BATCH,))

        def batches():
            while True:
                yield x, y

    source = batches()

    def step():
        images, labels = next(source)
        images = images.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = loss_fn(model(images), labels % 1000)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if args.serve:
        for _ in range(2):
            step()
        print(json.dumps({"ready": True}), flush=True)
        for _ in sys.stdin:
            step()
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            print(json.dumps({"img_s": round(args.steps * BATCH / (time.perf_counter() - started), 1)}), flush=True)
        return
    times = []
    for index in range(args.steps + 2):
        if index >= 2 and index % 2 == 0:
            started = time.perf_counter()
        step()
        if index >= 2 and index % 2 == 1:
            times.append(time.perf_counter() - started)
    result = {"img_s": round(2 * BATCH / statistics.median(times), 1)}
    if args.profile:
        steps = 3
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as trace:
            for _ in range(steps):
                step()
        kinds = dict.fromkeys(KINDS, 0.0)
        for event in trace.key_averages(group_by_input_shape=True):
            kinds[torch_kind(event.key, event.input_shapes)] += event.self_cpu_time_total / 1000 / steps
        result["profile_ms"] = {kind: round(ms, 1) for kind, ms in kinds.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
