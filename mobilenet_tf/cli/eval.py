"""`mobilenet-eval`: top-1/top-5 of a checkpoint, a SavedModel or a TFLite model on a validation split.

    mobilenet-eval --model_dir=runs/mobilenet_v2_digits
    mobilenet-eval --saved_model=runs/mobilenet_v2_digits/export/1 --dataset=digits
    mobilenet-eval --tflite=runs/mobilenet_v2_digits/export/tflite/model_int8.tflite
    mobilenet-eval --onnx=runs/mobilenet_v2_digits/export/onnx/model.onnx

The last line printed is JSON: {"top1": ..., "top5": ..., "examples": ...}.
"""

from __future__ import annotations

import json
from mobilenet_tf import cli

cli.quiet_tensorflow()

from mobilenet_tf import flags  # noqa: E402

COMMAND = "mobilenet-eval"
flags.define_eval_flags()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(COMMAND, f"unexpected arguments {' '.join(argv[1:])}: all options are --flags")
    try:
        kind, path, data = flags.eval_job_from_flags()
    except flags.FlagError as error:
        cli.fail(COMMAND, str(error))
    from mobilenet_tf import config, distribute, evaluate, predict
    from mobilenet_tf.checkpoint import restore_model
    from mobilenet_tf.data import sources

    cli.show_progress_logs()
    with cli.one_line_errors(COMMAND):
        info = sources.resolve(data)
        if kind == "checkpoint":
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


def check_classes(num_classes: int, info, dataset: str) -> None:
    if num_classes != info.num_classes:
        cli.fail(COMMAND, f"--dataset={dataset}: {info.num_classes} classes, but the model predicts {num_classes}")


def run():
    cli.run_app(main, flags.__name__)


if __name__ == "__main__":
    run()
