"""Held-out top-1 of float, post-training int8 and quantization-aware int8, side by side, per model.

    nice -n 10 python3 benchmarks/quantization_accuracy.py [--quick] [--seeds=3] [--cases=digits_v3_small,...]

On scikit-learn's digits (1437 training, 360 held-out images), at 32x32, for each case and seed:
a float run of the `digits` recipe with the case's model, width and epochs; its quantization-aware
fine-tune (`--qat`: 3 more epochs at a hundredth of the rate); then TFLite int8 models evaluated by
`mobilenet-eval`'s own code on the held-out split:

- ptq:          post-training, per-channel weights, 200 calibration images (what the export does);
- ptq_tensor:   the same with per-tensor weights (TFLite's first int8 scheme);
- ptq_few:      per-channel, 8 calibration images;
- qat:          the quantization-aware run's int8 model, from its own ranges (no calibration).

The peer of each int8 model is the float model it came from, in the same run: every int8 figure is
also given as its difference from float (points of top-1, mean and spread over seeds), and as its
agreement with float (share of images with the same top-1). `qat_float` is what the QAT run's
own evaluation measured (its fake-quantized twin). The last line is JSON.

Cases: `digits_*` are the recipe (25 epochs) with each model at width 1.0 (V1, V2, V3-Large,
V3-Small, V4-Conv-S, V4-Conv-M, V4-Hybrid-M, V4-Hybrid-L); `hard_*` the undertrained ones of docs/quantization.md (10
epochs, small widths: V1-0.25, V2-0.35, V3-Large-0.5, V3-Small-0.5, V4-Conv-S-0.5, V4-Conv-M-0.5).
This is not ImageNet: 8x8 digits upscaled to 32x32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf import config, export, predict, tflite, train  # noqa: E402
from mobilenet_tf.checkpoint import restore_model  # noqa: E402
from mobilenet_tf.data import sources  # noqa: E402

# name: (model, alpha, float epochs)
CASES = {
    "digits_v1": ("mobilenet_v1", 1.0, 25),
    "digits_v2": ("mobilenet_v2", 1.0, 25),
    "digits_v3_large": ("mobilenet_v3_large", 1.0, 25),
    "digits_v3_small": ("mobilenet_v3_small", 1.0, 25),
    "digits_v4_small": ("mobilenet_v4_conv_small", 1.0, 25),
    "digits_v4_medium": ("mobilenet_v4_conv_medium", 1.0, 25),
    "digits_v4_hybrid_medium": ("mobilenet_v4_hybrid_medium", 1.0, 25),
    "digits_v4_hybrid_large": ("mobilenet_v4_hybrid_large", 1.0, 25),
    "hard_v1": ("mobilenet_v1", 0.25, 10),
    "hard_v2": ("mobilenet_v2", 0.35, 10),
    "hard_v3_large": ("mobilenet_v3_large", 0.5, 10),
    "hard_v3_small": ("mobilenet_v3_small", 0.5, 10),
    "hard_v4_small": ("mobilenet_v4_conv_small", 0.5, 10),
    "hard_v4_medium": ("mobilenet_v4_conv_medium", 0.5, 10),
}
QAT_EPOCHS = 3
FORMS = ("float", "ptq", "ptq_tensor", "ptq_few", "qat_float", "qat")


def evaluate(path: str, info) -> tuple[float, np.ndarray]:
    """(top-1, predicted classes) of the model at `path` on the held-out split, as mobilenet-eval scores it."""
    classifier = predict.load(path)
    labels, probabilities = predict.collect(classifier, info)
    return predict.scores(labels, probabilities, len(classifier.class_names))["top1"], np.argmax(probabilities, 1)


def write_tflite(flatbuffer: bytes, directory: str, cfg) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "model_int8.tflite")
    with open(path, "wb") as f:
        f.write(flatbuffer)
    export.write_sidecar(directory, cfg)  # what predict.load reads beside a .tflite
    return path


def scaled(epochs: int, scale: float) -> int:
    return max(1, round(epochs * scale))


def run_case(name: str, seed: int, root: str, cache_dir: str, epochs_scale: float) -> dict:
    model_name, alpha, epochs = CASES[name]
    epochs = scaled(epochs, epochs_scale)
    base = config.replace(config.DIGITS, model={"name": model_name, "alpha": alpha},
                          data={"cache_dir": cache_dir},
                          train={"epochs": epochs, "seed": seed, "log_steps": 0, "export": False,
                                 "model_dir": os.path.join(root, f"{name}_{seed}_float")})
    train.train(base)
    keras.backend.clear_session()
    qat = config.replace(config.qat_finetune(base), train={
        "epochs": scaled(QAT_EPOCHS, epochs_scale), "init_checkpoint": base.train.model_dir,
        "model_dir": os.path.join(root, f"{name}_{seed}_qat")})
    train.train(qat)
    keras.backend.clear_session()

    info = sources.resolve(base.data)
    model, cfg = restore_model(base.train.model_dir)
    serving = export.serving_model(model, cfg)
    representative = tflite.representative_pixels(info, cfg, 200, seed=seed)
    size = cfg.model.image_size
    paths = {"float": base.train.model_dir, "qat_float": qat.train.model_dir}
    for form, calibration, per_channel in (("ptq", representative, True), ("ptq_tensor", representative, False),
                                           ("ptq_few", representative[:8], True)):
        flatbuffer = tflite.convert(serving, size, ["int8"], calibration, per_channel=per_channel)["int8"]
        paths[form] = write_tflite(flatbuffer, os.path.join(root, f"{name}_{seed}_{form}"), cfg)
    qat_model, qat_cfg = restore_model(qat.train.model_dir)
    flatbuffer = tflite.convert(export.serving_model(qat_model, qat_cfg), size, ["int8"], quantized=True)["int8"]
    paths["qat"] = write_tflite(flatbuffer, os.path.join(root, f"{name}_{seed}_qat_int8"), qat_cfg)
    keras.backend.clear_session()

    scores, predictions = {}, {}
    for form, path in paths.items():
        scores[form], predictions[form] = evaluate(path, info)
    agreement = {form: float(np.mean(predictions[form] == predictions["float"])) for form in paths if form != "float"}
    return {"top1": scores, "agrees_with_float": agreement}


def summary(runs: list[dict]) -> dict:
    """Per form: mean top-1, its min-max over seeds, and the mean difference from float in points."""
    out = {}
    for form in FORMS:
        values = [run["top1"][form] for run in runs]
        drops = [100 * (run["top1"][form] - run["top1"]["float"]) for run in runs]
        out[form] = {"top1": round(statistics.mean(values), 4), "min": round(min(values), 4),
                     "max": round(max(values), 4), "points_vs_float": round(statistics.mean(drops), 2),
                     "points_vs_float_range": [round(min(drops), 2), round(max(drops), 2)]}
        if form != "float":
            out[form]["agrees_with_float"] = round(statistics.mean(run["agrees_with_float"][form] for run in runs), 4)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed of digits_v3_small at a fifth of the epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args(argv)
    cases = ["digits_v3_small"] if args.quick else [c.strip() for c in args.cases.split(",") if c.strip()]
    seeds = range(1 if args.quick else args.seeds)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}")
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="quantization_accuracy_")
    cache_dir = os.path.join(root, "cache")
    result = {"qat_epochs": QAT_EPOCHS, "calibration": {"ptq": 200, "ptq_tensor": 200, "ptq_few": 8}, "cases": {}}
    try:
        scale = 0.2 if args.quick else 1.0
        for case in cases:
            runs = [run_case(case, seed, root, cache_dir, scale) for seed in seeds]
            model_name, alpha, epochs = CASES[case]
            epochs = scaled(epochs, scale)
            result["cases"][case] = {"model": f"{model_name} {alpha}", "epochs": epochs, "seeds": len(runs),
                                     "runs": runs, **summary(runs)}
            row = result["cases"][case]
            print(f"{case} ({row['model']}, {epochs} epochs, {len(runs)} seeds): " + ", ".join(
                f"{form} {row[form]['top1']:.4f} ({row[form]['points_vs_float']:+.2f})" for form in FORMS), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
