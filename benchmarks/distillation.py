"""Held-out top-1 of small students trained alone and distilled from a larger teacher, same epochs.

    nice -n 10 python3 benchmarks/distillation.py [--quick] [--seeds=3] [--settings=digits,hard]
        [--weight=0.5] [--temperature=4] [--teacher_epochs=25] [--teacher_smoothing=0.1]

On scikit-learn's digits at 32x32: the teacher is the `digits` recipe's V2-1.0 (25 epochs, seed 0);
each student (V1-0.25, V2-0.35) trains with the same recipe and epochs per seed, alone and with
`--teacher` for each pair of the comma-separated `--weight`s and `--temperature`s, on the digits
recipe's 25 epochs and on the 10 epochs of docs/quantization.md's harder cases. The peer of each distilled student is
the same student trained alone in the same run: the table gives both, the gain in points (mean and
spread over seeds), and the teacher. The last line is JSON. This is not ImageNet.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mobilenet_tf import config, train  # noqa: E402

STUDENTS = {"v1_0.25": ("mobilenet_v1", 0.25), "v2_0.35": ("mobilenet_v2", 0.35)}
TEACHER = ("mobilenet_v2", 1.0)


def top1(cfg: config.Config) -> float:
    result = train.train(cfg)
    keras.backend.clear_session()
    return result["top1"]


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value.strip()]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, V1-0.25 only, 3 and 5 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--settings", default="digits,hard", help="comma-separated, of digits (25 epochs), hard (10)")
    parser.add_argument("--weight", default=str(config.TrainConfig.distill_weight),
                        help="comma-separated: each (weight, temperature) pair is a distilled run per seed")
    parser.add_argument("--temperature", default=str(config.TrainConfig.distill_temperature), help="see --weight")
    parser.add_argument("--teacher_epochs", type=int, default=None, help="the teacher's epochs (default: the recipe's 25)")
    parser.add_argument("--teacher_smoothing", type=float, default=config.DIGITS.train.label_smoothing,
                        help="the teacher's label smoothing (default: the recipe's)")
    args = parser.parse_args(argv)
    students = {"v1_0.25": STUDENTS["v1_0.25"]} if args.quick else STUDENTS
    epochs_of = {"digits": 5 if args.quick else 25, "hard": 3 if args.quick else 10}
    settings = {name: epochs_of[name] for name in args.settings.split(",") if name}
    pairs = [(w, t) for w in floats(args.weight) for t in floats(args.temperature)]
    seeds = range(1 if args.quick else args.seeds)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="distillation_")
    base = config.replace(config.DIGITS, data={"cache_dir": os.path.join(root, "cache")},
                          train={"log_steps": 0, "export": False})
    try:
        teacher_dir = os.path.join(root, "teacher")
        teacher_epochs = args.teacher_epochs or epochs_of["digits"]
        teacher = top1(config.replace(base, model={"name": TEACHER[0], "alpha": TEACHER[1]},
                                      train={"epochs": teacher_epochs, "model_dir": teacher_dir,
                                             "label_smoothing": args.teacher_smoothing}))
        result = {"teacher": {"model": f"{TEACHER[0]} {TEACHER[1]}", "epochs": teacher_epochs,
                              "label_smoothing": args.teacher_smoothing, "top1": teacher},
                  "pairs": pairs, "cases": {}}
        for setting, epochs in settings.items():
            for student, (name, alpha) in students.items():
                alone, distilled = [], {pair: [] for pair in pairs}
                for seed in seeds:
                    cfg = config.replace(base, model={"name": name, "alpha": alpha}, train={"epochs": epochs, "seed": seed})
                    run = os.path.join(root, f"{setting}_{student}_{seed}")
                    alone.append(top1(config.replace(cfg, train={"model_dir": f"{run}_alone"})))
                    for weight, temperature in pairs:
                        distilled[(weight, temperature)].append(top1(config.replace(cfg, train={
                            "model_dir": f"{run}_w{weight}_t{temperature}", "teacher": teacher_dir,
                            "distill_weight": weight, "distill_temperature": temperature})))
                for (weight, temperature), scores in distilled.items():
                    gains = [100 * (d - a) for a, d in zip(alone, scores)]
                    case = {"epochs": epochs, "weight": weight, "temperature": temperature, "alone": alone,
                            "distilled": scores, "alone_mean": round(statistics.mean(alone), 4),
                            "distilled_mean": round(statistics.mean(scores), 4),
                            "gain_points": round(statistics.mean(gains), 2),
                            "gain_range": [round(min(gains), 2), round(max(gains), 2)]}
                    result["cases"][f"{setting}_{student}_w{weight}_t{temperature}"] = case
                    print(f"{setting} {student} ({epochs} epochs, {len(gains)} seeds, w={weight:g}, T={temperature:g}): "
                          f"alone {case['alone_mean']:.4f}, distilled {case['distilled_mean']:.4f}, gain "
                          f"{case['gain_points']:+.2f} points ({case['gain_range'][0]:+.2f} to "
                          f"{case['gain_range'][1]:+.2f}); teacher {teacher:.4f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
