"""`mobilenet-export`: a trained run -> a TF Serving SavedModel version, and TFLite models beside it.

    mobilenet-export --model_dir=runs/mobilenet_v2_digits --tflite=float32,int8

writes runs/mobilenet_v2_digits/export/<next version>/ and export/tflite/model_{float32,int8}.tflite
(int8 calibrated on --representative_examples training images, or, for a --qat run, from the ranges
it learned); --onnx adds export/onnx/model.onnx. A line per file as it is written, then, last, the
files written in one line (with --json, as JSON).

    mobilenet-export --pretrained=timm/mobilenetv4_conv_small.e2400_r224_in1k --model_dir=runs/v4s

first writes runs/v4s as a run of that checkpoint (its ckpt-0 and config.json), then its exports;
--keras adds export/keras/model.keras, --web export/web/ (a static page running the int8 model, or
--web_model=float32, in the browser).
"""

from __future__ import annotations

import json

from mobilenet_tf import cli, flags

COMMAND = "mobilenet-export"
flags.define_export_flags()


def main(argv):
    cli.no_arguments(COMMAND, argv)
    with cli.one_line_errors(COMMAND):
        model_dir, checkpoint_path, cfg, version = flags.export_job_from_flags()
    cli.load_tensorflow(COMMAND)
    from mobilenet_tf import config, export, onnx_export, tflite, web
    from mobilenet_tf.checkpoint import restore_model, write_pretrained_run
    from mobilenet_tf.data import sources

    cli.show_progress_logs()
    with cli.one_line_errors(COMMAND):
        if cfg.export.onnx:
            onnx_export.tf2onnx_convert()  # importable, before anything is written
        if flags.FLAGS.pretrained:
            source = write_pretrained_run(cfg, model_dir)
            print(f"run {model_dir}: {source} weights ({cfg.train.pretrained})", flush=True)
        model, _ = restore_model(model_dir, checkpoint_path, ema=flags.FLAGS.ema)
        written = {"saved_model": export.export_saved_model(model, cfg, cfg.export.export_dir, version)}
        print(f"SavedModel {written['saved_model']}", flush=True)
        if cfg.export.tflite:
            representative = None
            if config.calibrates(cfg):
                info = sources.resolve(cfg.data)
                representative = tflite.representative_pixels(info, cfg, cfg.export.representative_examples)
            written["tflite"] = tflite.write_models(model, cfg, cfg.export.export_dir, cfg.export.tflite,
                                                    representative)
            for mode, tflite_path in written["tflite"].items():
                print(f"TFLite {mode} {tflite_path}", flush=True)
        if cfg.export.onnx:
            written["onnx"] = onnx_export.write_model(model, cfg, cfg.export.export_dir, cfg.export.onnx_opset,
                                                      cfg.export.onnx_nchw)
            print(f"ONNX {written['onnx']}", flush=True)
        if cfg.export.keras:
            written["keras"] = export.write_keras(model, cfg, cfg.export.export_dir)
            print(f"Keras {written['keras']}", flush=True)
        if cfg.export.web:
            written["web"] = web.write_page(written["tflite"][cfg.export.web], cfg.export.web, cfg,
                                            cfg.export.export_dir)
            print(f"web page {written['web']} (serve it: python3 -m http.server -d {written['web']})", flush=True)
    files = [written["saved_model"], *written.get("tflite", {}).values(),
             *(written[form] for form in ("onnx", "keras", "web") if form in written)]
    print(json.dumps(written) if flags.FLAGS.json else f"exported {len(files)}: {' '.join(files)}", flush=True)


def run():
    cli.run_app(main, flags.__name__, COMMAND)


if __name__ == "__main__":
    run()
