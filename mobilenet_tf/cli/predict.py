"""`mobilenet-predict`: the top classes of image files, with any form of a trained model.

    mobilenet-predict --model=runs/mobilenet_v2_digits/export/1 a.png b.jpg
    mobilenet-predict --model=runs/mobilenet_v2_digits/export/tflite/model_int8.tflite --json *.png

A table per file (or, with --json, one JSON object per line). A file that cannot be read or is not
an image gets an error line and the others are still predicted; the exit status is 1 if any failed.
"""

from __future__ import annotations

import json
import sys

from mobilenet_tf import cli, flags

COMMAND = "mobilenet-predict"
flags.define_predict_flags()
FLAGS = flags.FLAGS


def main(argv):
    files = argv[1:]
    with cli.one_line_errors(COMMAND):
        path = flags.predict_job_from_flags(files)
    cli.load_tensorflow(COMMAND)
    import tensorflow as tf

    from mobilenet_tf import errors, predict

    cli.show_progress_logs()
    with cli.one_line_errors(COMMAND):
        classifier = predict.load(path, ema=FLAGS.ema, providers=FLAGS.onnx_providers or None)
    k = min(FLAGS.top_k, len(classifier.class_names))
    width = max(len(f) for f in files)
    name_width = min(max(len("class"), *(len(name) for name in classifier.class_names)), 40)
    if not FLAGS.json:
        print(f"{'file':<{width}}  {'class':<{name_width}}  probability")
    failed = 0
    for file in files:
        try:
            with open(file, "rb") as f:
                encoded = f.read()
            (top,) = predict.top_k(classifier.predict([encoded]), classifier.class_names, k)
        except (OSError, tf.errors.InvalidArgumentError) as error:
            failed += 1
            message = error.strerror if isinstance(error, OSError) and error.strerror else errors.tf_message(error)
            if FLAGS.json:
                print(json.dumps({"file": file, "error": message}), flush=True)
            else:
                sys.stderr.write(f"{COMMAND}: error: {file}: {message}\n")
            continue
        if FLAGS.json:
            predictions = [{"class": name, "probability": round(p, 6)} for name, p in top]
            print(json.dumps({"file": file, "predictions": predictions}), flush=True)
        else:
            for i, (name, p) in enumerate(top):
                print(f"{file if i == 0 else '':<{width}}  {name:<{name_width}}  {p:.4f}", flush=True)
    if failed:
        sys.exit(1)


def run():
    cli.run_app(main, flags.__name__, COMMAND)


if __name__ == "__main__":
    run()
