"""`mobilenet-eval`: top-1/top-5 of a checkpoint, a SavedModel or a TFLite model on a validation split.

    mobilenet-eval --model_dir=runs/mobilenet_v2_digits
    mobilenet-eval --saved_model=runs/mobilenet_v2_digits/export/1 --dataset=digits
    mobilenet-eval --tflite=runs/mobilenet_v2_digits/export/tflite/model_int8.tflite
    mobilenet-eval --onnx=runs/mobilenet_v2_digits/export/onnx/model.onnx

The last line printed is JSON: {"top1": ..., "top5": ..., "examples": ...}. With --report_dir=DIR
it also writes DIR/confusion_matrix.png (and .csv), per_class.csv (precision, recall, F1),
predictions.csv and worst_misclassified.png (needs the demo extra: matplotlib).
"""

from __future__ import annotations

import heapq
import json
import os
import sys

from mobilenet_tf import cli, flags

COMMAND = "mobilenet-eval"
flags.define_eval_flags()
FLAGS = flags.FLAGS


def main(argv):
    cli.no_arguments(COMMAND, argv)
    with cli.one_line_errors(COMMAND):
        kind, path, data = flags.eval_job_from_flags()
    cli.load_tensorflow(COMMAND)
    from mobilenet_tf import config, distribute, evaluate, predict
    from mobilenet_tf.checkpoint import restore_model
    from mobilenet_tf.data import sources

    cli.show_progress_logs()
    with cli.one_line_errors(COMMAND):
        info = sources.resolve(data)
        if FLAGS.report_dir:
            metrics = evaluate_with_report(kind, path, info, FLAGS.report_dir)
        elif kind == "checkpoint":
            # The training loop's own evaluation, on the run's preprocessing.
            model, cfg = restore_model(path, ema=FLAGS.ema)
            classes = cfg.model.num_classes
            cfg = config.replace(cfg, data={"dataset": data.dataset, "cache_dir": data.cache_dir},
                                 train={"batch_size": FLAGS.batch_size or cfg.train.batch_size})
            check_classes(classes, info, data.dataset)
            strategy = distribute.get_strategy("auto")
            metrics = evaluate.evaluate(strategy, model, evaluate.eval_dataset(strategy, info, cfg))
        else:
            classifier = predict.load(path, providers=FLAGS.onnx_providers or None)
            check_classes(len(classifier.class_names), info, data.dataset)
            metrics = predict.evaluate(classifier, info, batch_size=FLAGS.batch_size or 64)
    print(json.dumps(metrics), flush=True)


def evaluate_with_report(kind: str, path: str, info, report_dir: str) -> dict:
    """Scores and the report, from one set of predictions (any kind of model, through the
    loader mobilenet-predict uses)."""
    import numpy as np
    import tensorflow as tf

    from mobilenet_tf import predict, report

    report.pyplot()  # fail before the work when matplotlib is missing
    classifier = predict.load(path, ema=FLAGS.ema, providers=FLAGS.onnx_providers or None)
    check_classes(len(classifier.class_names), info, FLAGS.dataset or "the run's data set")
    worst = []  # the most confidently wrong: (confidence, -index, encoded bytes), least confident first

    def keep_worst(offset, encoded, batch_labels, batch_probabilities):
        guesses = np.argmax(batch_probabilities, axis=1)
        for i in np.flatnonzero(guesses != batch_labels):
            heapq.heappush(worst, (float(batch_probabilities[i, guesses[i]]), -(offset + i), encoded[i]))
            if len(worst) > report.WORST_COUNT:
                heapq.heappop(worst)

    labels, probabilities = predict.collect(classifier, info, batch_size=FLAGS.batch_size or 64, on_batch=keep_worst)
    images = {-negated: image for _, negated, image in worst}
    names = [f"{info.name}/validation/{i}" for i in range(len(labels))]
    decode = lambda i: tf.io.decode_image(images[i], channels=3, expand_animations=False).numpy()  # noqa: E731
    paths = report.write_report(report_dir, classifier.class_names, labels, probabilities, names, decode)
    sys.stderr.write(f"{COMMAND}: report in {os.path.dirname(paths['confusion_png'])}: "
                     f"{', '.join(sorted(os.path.basename(p) for p in paths.values()))}\n")
    return predict.scores(labels, probabilities, len(classifier.class_names))


def check_classes(num_classes: int, info, dataset: str) -> None:
    if num_classes != info.num_classes:
        cli.fail(COMMAND, f"--dataset={dataset}: {info.num_classes} classes, but the model predicts {num_classes}")


def run():
    cli.run_app(main, flags.__name__, COMMAND)


if __name__ == "__main__":
    run()
