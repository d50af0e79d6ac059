"""`mobilenet-export`: a trained run -> a TF Serving SavedModel version, and TFLite models beside it.

    mobilenet-export --model_dir=runs/mobilenet_v2_digits --tflite=float32,int8

writes runs/mobilenet_v2_digits/export/<next version>/ and export/tflite/model_{float32,int8}.tflite
(int8 calibrated on --representative_examples training images, or, for a --qat run, from the ranges
it learned); --onnx adds export/onnx/model.onnx.
"""

from __future__ import annotations

from mobilenet_tf import cli

cli.quiet_tensorflow()

from mobilenet_tf import flags  # noqa: E402

COMMAND = "mobilenet-export"
flags.define_export_flags()


def main(argv):
    cli.no_arguments(COMMAND, argv)
    with cli.one_line_errors(COMMAND):
        model_dir, checkpoint_path, cfg, version = flags.export_job_from_flags()
    from mobilenet_tf import export, onnx_export, tflite
    from mobilenet_tf.checkpoint import restore_model
    from mobilenet_tf.data import sources

    cli.show_progress_logs()
    with cli.one_line_errors(COMMAND):
        model, _ = restore_model(model_dir, checkpoint_path, ema=flags.FLAGS.ema)
        path = export.export_saved_model(model, cfg, cfg.export.export_dir, version)
        print(f"SavedModel {path}", flush=True)
        if cfg.export.tflite:
            representative = None
            if tflite.calibrates(cfg):
                info = sources.resolve(cfg.data)
                representative = tflite.representative_pixels(info, cfg, cfg.export.representative_examples)
            for mode, tflite_path in tflite.write_models(model, cfg, cfg.export.export_dir, cfg.export.tflite,
                                                         representative).items():
                print(f"TFLite {mode} {tflite_path}", flush=True)
        if cfg.export.onnx:
            path = onnx_export.write_model(model, cfg, cfg.export.export_dir, cfg.export.onnx_opset,
                                           cfg.export.onnx_nchw)
            print(f"ONNX {path}", flush=True)


def run():
    cli.run_app(main, flags.__name__)


if __name__ == "__main__":
    run()
