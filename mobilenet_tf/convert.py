"""`python -m mobilenet_tf.convert` is `mobilenet-convert` (see mobilenet_tf/cli/convert.py)."""

if __name__ == "__main__":
    from mobilenet_tf.cli.convert import run

    run()
