"""`python -m mobilenet_tf.eval` is `mobilenet-eval` (the library is `mobilenet_tf.evaluate`)."""

if __name__ == "__main__":
    from mobilenet_tf.cli.eval import run

    run()
