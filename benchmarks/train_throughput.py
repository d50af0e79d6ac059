"""Training images/s of our loop against keras.applications + `fit`, measured side by side.

    nice -n 10 python3 benchmarks/train_throughput.py [--quick] [--model=mobilenet_v3_large] [--size=224]

MobileNetV2-1.0 (or `--model`'s V1, V3 or V4, at width 1.0) at 224x224 (128x128 with --quick; `--size`),
global batch 32, on this machine's CPU:
- ours (float32 and mixed_bfloat16): `mobilenet_tf.train.train` on synthetic ImageNet-sized JPEG
  records (500x375, quality 90) through the full input pipeline (Inception crop on the encoded
  bytes, flip, resize), the model's ImageNet preset with RMSProp and no RandAugment (the peer's
  optimizer, and no augmentation it lacks); images/s of the training loop after its first
  (tracing) interval.
- peer: `keras.applications.MobileNetV2(weights=None)` (`MobileNet`, `MobileNetV3Large/Small(weights=
  None, include_preprocessing=False)`; V4 has none: Keras has no V4) compiled with defaults (`compile(optimizer="rmsprop",
  loss="sparse_categorical_crossentropy")`) and `fit` on in-memory tensors (no input pipeline at
  all); images/s of its epochs after the first.

- timm (the `timm` extra; `timm_train_step.py` in a process of its own): the same architecture in
  timm on PyTorch eager, channels_last, RMSprop, the same batch on every core: its step alone on
  one in-memory batch (`timm_img_s`; `timm_bf16_img_s` under bfloat16 autocast), and end to end on
  the same JPEGs through timm's own loader and transforms (`timm_end_to_end_img_s`). Ours step
  alone: `ours_step_img_s`, our loop on one in-memory batch (`ours_bf16_step_img_s` in mixed
  bfloat16, which on a CPU computes the Conv2D layers alone in bfloat16: `train.bfloat16_convolutions`).
  The two steps alone are timed in turns (5 rounds of 4 steps each with --quick, 7 of 10 without;
  `steps_in_turns`): the medians, and each ratio's range over the rounds (`..._rounds`).

The last line is JSON with every rate, ours / keras.applications (goal: >= 1.5; V4: none), and
ours / timm for the step alone (`ratio_step_vs_timm`) and end to end (`ratio_end_to_end_vs_timm`). `--teacher` also times our
float32 step distilled from a teacher (`--teacher`: V2-1.4 at the same size, random weights: the
price is its forward pass, whatever it learned) and gives distilled / plain.

`--profile` first prints where a training step's time goes, by TensorFlow op type, from a
TF-profiler trace of a few steps of each (ours: `make_train_loop` on an in-memory batch, float32
and mixed bfloat16; peer: `fit`), then ours beside timm's by layer kind (depthwise forward and backward, other convolutions,
batch norm, activations, the rest; timm's from PyTorch's profiler, `layer_kinds.py`). The first is
how the Keras 3 BatchNormalization (about ten separate ops per layer, more thread time than all the
convolutions) was found and replaced by a fused one, and why a whole-model bfloat16 step lost to
float32 on this CPU (its depthwise backward kernels and ReLU6 in bfloat16).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from input_pipeline import make_data  # noqa: E402

from mobilenet_tf import config, paths, train  # noqa: E402
from mobilenet_tf.data import tfrecord  # noqa: E402

BATCH = 32
PRESETS = {"mobilenet_v1": config.MOBILENET_V1_IMAGENET, "mobilenet_v2": config.MOBILENET_V2_IMAGENET,
           "mobilenet_v3_large": config.MOBILENET_V3_LARGE_IMAGENET,
           "mobilenet_v3_small": config.MOBILENET_V3_SMALL_IMAGENET,
           "mobilenet_v4_conv_small": config.MOBILENET_V4_CONV_SMALL_IMAGENET,
           "mobilenet_v4_conv_medium": config.MOBILENET_V4_CONV_MEDIUM_IMAGENET,
           # No recipe of record is ours for the hybrids: Conv-M's and Conv-L's, with the hybrid's network.
           "mobilenet_v4_hybrid_medium": config.replace(config.MOBILENET_V4_CONV_MEDIUM_IMAGENET,
                                                        model={"name": "mobilenet_v4_hybrid_medium"}),
           "mobilenet_v4_hybrid_large": config.replace(config.MOBILENET_V4_CONV_LARGE_IMAGENET,
                                                       model={"name": "mobilenet_v4_hybrid_large"})}
# keras.applications' model of each family it has (V4: none).
PEERS = {"mobilenet_v1": keras.applications.MobileNet, "mobilenet_v2": keras.applications.MobileNetV2,
         "mobilenet_v3_large": keras.applications.MobileNetV3Large,
         "mobilenet_v3_small": keras.applications.MobileNetV3Small}


def recipe(model: str, size: int) -> config.Config:
    """The model's ImageNet preset at `size`, on RMSProp and without RandAugment (as the peer). An
    AdamW preset's decoupled weight decay (V3-Large 0.1, V4 0.01-0.2) would be an L2 penalty under
    RMSProp that swamps the loss: those take V2's L2 (1e-5; the step's cost is the same)."""
    preset = PRESETS[model]
    weight_decay = (PRESETS["mobilenet_v2"] if preset.train.optimizer == "adamw" else preset).model.weight_decay
    return config.replace(preset, model={"image_size": (size, size), "weight_decay": weight_decay},
                          data={"randaugment_ops": 0},
                          train={"optimizer": "rmsprop", "batch_size": BATCH, "warmup_epochs": 0.0})


def peer_model(model: str, size: int) -> keras.Model:
    """keras.applications' model of that name, taking [-1, 1] input as ours does."""
    extra = {"include_preprocessing": False} if model.startswith("mobilenet_v3") else {}
    return PEERS[model](weights=None, input_shape=(size, size, 3), classes=1000, **extra)


class Rates(keras.callbacks.Callback):
    """images/s of each logged interval of our loop."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(logs["img_per_sec"])


def records(root: str, num_images: int) -> tuple[tfrecord.DatasetInfo, str]:
    """Synthetic JPEG records with a train split and a one-batch validation split, and class folders
    of the same JPEGs (timm's loader reads those). Each photo is stored 4 times in the records
    (decoding costs the same; making the photos is slow)."""
    _, info, folders = make_data(root, num_images // 4, copies=4)
    shutil.copy(info.files("train")[0], os.path.join(info.data_dir, paths.shard_name("validation", 0, 1)))
    held_out = sum(1 for _ in tf.data.TFRecordDataset(info.files("validation")))
    info = tfrecord.DatasetInfo(name=info.name, num_classes=info.num_classes, class_names=info.class_names,
                                counts={"train": num_images, "validation": held_out})
    tfrecord.write_info(os.path.join(root, "records"), info)
    return tfrecord.read_info(os.path.join(root, "records")), folders


def teacher_run(root: str, info, size: int) -> str:
    """A run directory holding an untrained V2-1.4 of the records' classes (config.json and a
    checkpoint), as `--teacher` takes it."""
    from mobilenet_tf import optim

    model_dir = os.path.join(root, "teacher")
    cfg = config.replace(recipe("mobilenet_v2", size), model={"alpha": 1.4, "num_classes": info.num_classes},
                         data={"dataset": f"tfrecord:{info.data_dir}"}, train={"model_dir": model_dir})
    model = train.build_train_model(cfg)
    optimizer = optim.build_optimizer(cfg.train, 1)
    optimizer.build(model.trainable_variables)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer), model_dir, 1).save()
    config.save(cfg, model_dir)
    keras.backend.clear_session()
    return model_dir


def ours(info, root: str, precision: str, steps: int, interval: int, size: int, model: str, teacher: str = "") -> float:
    cfg = config.replace(
        recipe(model, size),
        data={"dataset": f"tfrecord:{info.data_dir}"},
        train={"epochs": 1, "precision": precision, "log_steps": interval,
               "model_dir": os.path.join(root, f"run_{precision}{'_distilled' if teacher else ''}"), "export": False,
               "teacher": teacher},
    )
    rates = Rates()
    train.train(cfg, datasets=info, callbacks=[rates])
    keras.backend.clear_session()
    return statistics.median(rates.rates[1:])  # the first interval includes tracing


# timm's build of each of our models (the architecture test_timm.py checks ours against).
TIMM = {"mobilenet_v1": "mobilenetv1_100", "mobilenet_v2": "mobilenetv2_100", "mobilenet_v3_large": "mobilenetv3_large_100",
        "mobilenet_v3_small": "mobilenetv3_small_100", "mobilenet_v4_conv_small": "mobilenetv4_conv_small",
        "mobilenet_v4_conv_medium": "mobilenetv4_conv_medium", "mobilenet_v4_conv_large": "mobilenetv4_conv_large",
        "mobilenet_v4_hybrid_medium": "mobilenetv4_hybrid_medium", "mobilenet_v4_hybrid_large": "mobilenetv4_hybrid_large"}


def timm_command(model: str, size: int, steps: int, *options: str) -> list[str] | None:
    """The command that runs `timm_train_step.py` on timm's twin of `model`; None without the timm extra."""
    import importlib.util

    if importlib.util.find_spec("timm") is None:
        return None
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timm_train_step.py")
    return [sys.executable, script, TIMM[model], str(size), str(steps), *options]


def timm_train(model: str, size: int, steps: int, folder: str | None = None, profile: bool = False):
    """timm's images/s (benchmarks/timm_train_step.py, in a process of its own), with `profile` its
    milliseconds per step by layer kind instead; None without the timm extra."""
    import subprocess

    command = timm_command(model, size, steps, *([folder] if folder else []), *(["--profile"] if profile else []))
    if command is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["profile_ms" if profile else "img_s"]


def in_memory_loop(model_name: str, size: int, precision: str = "float32"):
    """(our training loop, an iterator repeating one in-memory batch, that batch)."""
    from mobilenet_tf import optim

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 1000, BATCH).astype(np.int32)
    cfg = config.replace(recipe(model_name, size), model={"num_classes": 1000}, train={"precision": precision})
    strategy = tf.distribute.get_strategy()
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        model = train.build_train_model(cfg)
    finally:
        keras.config.set_dtype_policy(policy)
    optimizer = optim.build_optimizer(cfg.train, 100, weight_decay=cfg.model.weight_decay)
    optimizer.build(model.trainable_variables)
    loop = train.make_train_loop(strategy, model, optimizer, cfg)
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    return loop, iterator, (x, y)


def steps_in_turns(model_name: str, size: int, steps: int, rounds: int, precision: str = "float32"):
    """Our training step alone (the loop of `train` on one in-memory batch) and timm's (on its own
    in-memory batch, `timm_train_step.py --serve`), timed in turns in one run: `rounds` times
    `steps` of ours, then `steps` of timm's, each framework idle (timm's process blocked on its
    stdin) while the other runs, so this VM's drifting speed (up to 50% within minutes) hits both
    alike; each turn starts with one untimed step (the first after a pause runs slow on both).
    Returns ({"ours": img/s, "timm": img/s}, the medians over rounds, and the per-round ratios
    ours / timm); timm's entries absent without the timm extra."""
    import subprocess

    loop, iterator, _ = in_memory_loop(model_name, size, precision)
    loop(iterator, tf.constant(2))  # trace
    command = timm_command(model_name, size, steps, "--serve", *(["--bf16"] if precision == "mixed_bfloat16" else []))
    peer = None
    if command is not None:
        peer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        json.loads(peer.stdout.readline())  # warmed up
    rates = {"ours": [], "timm": []}
    try:
        for _ in range(rounds):
            time.sleep(0.5)  # the other framework's threads stop spinning
            loop(iterator, tf.constant(1))
            started = time.perf_counter()
            loop(iterator, tf.constant(steps))
            rates["ours"].append(steps * BATCH / (time.perf_counter() - started))
            if peer is not None:
                time.sleep(0.5)
                peer.stdin.write("\n")
                peer.stdin.flush()
                rates["timm"].append(json.loads(peer.stdout.readline())["img_s"])
    finally:
        if peer is not None:
            peer.stdin.close()
            peer.wait()
        keras.backend.clear_session()
    ratios = [ours / timm for ours, timm in zip(rates["ours"], rates["timm"])]
    return {name: statistics.median(values) for name, values in rates.items() if values}, ratios


def keras_fit(steps: int, epochs: int, size: int, model_name: str) -> float:
    keras.config.set_dtype_policy("float32")
    model = peer_model(model_name, size)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (steps * BATCH, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 1000, steps * BATCH)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[Timer()])
    keras.backend.clear_session()
    return steps * BATCH / statistics.median(times[1:])  # the first epoch includes tracing


def op_milliseconds(run, steps: int) -> collections.Counter:
    """Thread-milliseconds per step of each TensorFlow op type while `run()` executes `steps` steps."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="profile_")
    tf.profiler.experimental.start(logdir)
    try:
        run()
    finally:
        tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    shutil.rmtree(logdir, ignore_errors=True)
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's op threads
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # "layer/op_name:OpType", not the executor's own events
                    op_name, op_type = name.rsplit(":", 1)
                    if op_type.endswith("MatMul") and "gradient_tape/" in op_name:
                        op_type += "Gradient"  # a 1x1 convolution's backward MatMul (layer_kinds.py)
                    totals[op_type] += event.duration_ps / 1e9 / steps
    return totals


def profile(size: int, model_name: str, steps: int = 3):
    """Print where a training step's time goes: ours and keras.applications' (`fit`) by TF op type,
    then ours beside timm's by layer kind (layer_kinds.py)."""
    from layer_kinds import KINDS, tf_kind

    profiles = {}
    for precision, name in (("float32", "ours"), ("mixed_bfloat16", "ours, mixed bfloat16")):
        loop, iterator, (x, y) = in_memory_loop(model_name, size, precision)
        loop(iterator, tf.constant(1))  # trace
        profiles[name] = op_milliseconds(lambda: loop(iterator, tf.constant(steps)), steps)
        keras.backend.clear_session()
    if model_name in PEERS:
        peer = peer_model(model_name, size)
        peer.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
        xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
        peer.fit(xs, ys, batch_size=BATCH, epochs=1, verbose=0)  # trace
        profiles["keras.applications + fit"] = op_milliseconds(
            lambda: peer.fit(xs, ys, batch_size=BATCH, epochs=1, verbose=0), steps)
        keras.backend.clear_session()
    for name, ops in profiles.items():
        print(f"{name}: {sum(ops.values()):.0f} thread-ms per step at {size}x{size}, by op type:")
        for op, ms in ops.most_common(10):
            print(f"  {op:45s} {ms:7.1f}")
    timm_kinds = timm_train(model_name, size, 4, profile=True)
    if timm_kinds is None:
        return
    ours_kinds = dict.fromkeys(KINDS, 0.0)
    for op, ms in profiles["ours"].items():
        ours_kinds[tf_kind(op)] += ms
    print(f"ms per step at {size}x{size}, ours (TensorFlow) and timm (PyTorch) by layer kind:")
    for kind in KINDS:
        ratio = ours_kinds[kind] / timm_kinds[kind] if timm_kinds[kind] else float("nan")
        print(f"  {kind:62s} {ours_kinds[kind]:7.1f} {timm_kinds[kind]:7.1f}  {ratio:5.2f}x")
    print(f"  {'total':62s} {sum(ours_kinds.values()):7.1f} {sum(timm_kinds.values()):7.1f}")


def step_ratios(model: str, size: int, quick: bool) -> dict:
    """The float32 and mixed-bfloat16 steps alone, ours and timm's in turns (`steps_in_turns`)."""
    result = {}
    rounds, turn = (5, 4) if quick else (7, 10)
    for precision, key, peer_key, ratio_key in (
            ("float32", "ours_step_img_s", "timm_img_s", "ratio_step_vs_timm"),
            ("mixed_bfloat16", "ours_bf16_step_img_s", "timm_bf16_img_s", "ratio_bf16_step_vs_timm_bf16")):
        rates, ratios = steps_in_turns(model, size, turn, rounds, precision)
        result[key] = round(rates["ours"], 1)
        if "timm" in rates:
            result[peer_key] = round(rates["timm"], 1)
            result[ratio_key] = round(result[key] / result[peer_key], 2)
            result[ratio_key + "_rounds"] = [round(min(ratios), 2), round(max(ratios), 2)]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (under 60 s)")
    parser.add_argument("--profile", action="store_true", help="first print each step's time by op type")
    parser.add_argument("--model", choices=sorted(PRESETS), default="mobilenet_v2", help="architecture (width 1.0)")
    parser.add_argument("--teacher", action="store_true", help="also time the float32 step distilled from V2-1.4")
    parser.add_argument("--size", type=int, help="image size (default: 128 with --quick, else 224)")
    parser.add_argument("--steps-only", action="store_true",
                        help="only the steps alone against timm's, in turns (no records, end to end or fit)")
    args = parser.parse_args()
    # --quick measures at 128x128 (both sides), the full run at 224x224.
    steps, interval, fit_epochs, size = (6, 1, 2, 128) if args.quick else (60, 10, 4, 224)
    size = args.size or size
    if args.profile:
        profile(size, args.model)
    machine = f"{platform.machine()} {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}"
    result = {"machine": machine, "model": f"{args.model} 1.0 {size}", "global_batch": BATCH}
    if args.steps_only:
        print(json.dumps({**result, **step_ratios(args.model, size, args.quick)}))
        return
    root = tempfile.mkdtemp(prefix="train_throughput_")
    try:
        info, folders = records(root, steps * BATCH)
        result["ours_float32_img_s"] = round(ours(info, root, "float32", steps, interval, size, args.model), 1)
        result["ours_mixed_bfloat16_img_s"] = round(ours(info, root, "mixed_bfloat16", steps, interval, size,
                                                         args.model), 1)
        if args.model in PEERS:
            result["keras_fit_img_s"] = round(keras_fit(3 if args.quick else steps // 4, fit_epochs, size, args.model), 1)
        result.update(step_ratios(args.model, size, args.quick))
        timm_end_to_end = timm_train(args.model, size, 8 if args.quick else 20, folders)
        if timm_end_to_end is not None:
            result["timm_end_to_end_img_s"] = timm_end_to_end
            result["ratio_end_to_end_vs_timm"] = round(result["ours_float32_img_s"] / timm_end_to_end, 2)
        if args.teacher:
            result["ours_float32_distilled_img_s"] = round(ours(info, root, "float32", steps, interval, size, args.model,
                                                                teacher_run(root, info, size)), 1)
            result["distilled_vs_plain"] = round(result["ours_float32_distilled_img_s"] / result["ours_float32_img_s"], 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for precision in ("float32", "mixed_bfloat16") if "keras_fit_img_s" in result else ():
        result[f"ratio_{precision}_vs_keras_fit"] = round(result[f"ours_{precision}_img_s"] / result["keras_fit_img_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
