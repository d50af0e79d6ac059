"""`mobilenet-demo`: a web page to upload, drop or paste a photo and see the model's top classes.

    mobilenet-demo --model=runs/mobilenet_v2_digits/export
    mobilenet-demo --model=runs/mobilenet_v2_digits/export/tflite/model_int8.tflite --port=8080

Serves http://127.0.0.1:7860 (--host, --port) until Ctrl-C; needs the demo extra
(pip install -e .[demo]). --model takes what mobilenet-predict takes.
"""

from __future__ import annotations

import signal
import sys

from mobilenet_tf import cli, flags

COMMAND = "mobilenet-demo"
FLAGS = flags.FLAGS
flags.define_demo_flags()


def main(argv):
    cli.no_arguments(COMMAND, argv)
    with cli.one_line_errors(COMMAND):
        flags.check_model(FLAGS.model)
    for name in ("top_k", "max_batch_size"):
        if FLAGS[name].value < 1:
            cli.fail(COMMAND, f"--{name}={FLAGS[name].value}: must be at least 1")
    if not 1 <= FLAGS.port <= 65535:
        cli.fail(COMMAND, f"--port={FLAGS.port}: must be between 1 and 65535")
    if FLAGS.max_upload_mb <= 0:
        cli.fail(COMMAND, f"--max_upload_mb={FLAGS.max_upload_mb}: must be positive")
    cli.load_tensorflow(COMMAND)
    from mobilenet_tf import demo

    demo.prepare_environment()
    cli.show_progress_logs()
    with cli.one_line_errors(COMMAND):
        app = demo.build_app(FLAGS.model, top_k=FLAGS.top_k, max_upload_mb=FLAGS.max_upload_mb,
                             max_batch_size=FLAGS.max_batch_size, report_dir=FLAGS.report_dir, ema=FLAGS.ema)
        # SIGTERM (a supervisor, a test) ends the server like Ctrl-C: the upload directory is removed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            # One model call at a time; the queue gathers waiting requests into batches for it.
            _, url, share_url = app.queue(default_concurrency_limit=1).launch(
                server_name=FLAGS.host, server_port=FLAGS.port, share=FLAGS.share, show_error=True,
                max_file_size=int(FLAGS.max_upload_mb * 2**20), ssr_mode=False, quiet=True, prevent_thread_lock=True,
            )
        except OSError as error:  # the port is taken
            cli.fail(COMMAND, f"--port={FLAGS.port}: cannot listen on {FLAGS.host}:{FLAGS.port} ({error})")
    print(f"Serving {FLAGS.model} at {url}{f' and {share_url}' if share_url else ''} (Ctrl-C stops)", flush=True)
    app.block_thread()


def run():
    cli.run_app(main, __name__, COMMAND)


if __name__ == "__main__":
    run()
