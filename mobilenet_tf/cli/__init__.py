"""Thin absl apps, one per command: parse flags, build the config, call the library."""

from __future__ import annotations

import contextlib
import logging
import os
import sys


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the terminal unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def show_progress_logs() -> None:
    """absl INFO lines from this package; TensorFlow's own INFO lines (saver sharding, asset
    writing) would drown them, so only its warnings and errors pass."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    # Some TensorFlow modules log through their own "tensorflow" logger ("Assets written to ...").
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl_logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= logging.WARNING or f"{os.sep}mobilenet_tf{os.sep}" in record.pathname
    )


def fail(command: str, message: str) -> None:
    """End the program with one line on stderr and exit status 1."""
    sys.stderr.write(f"{command}: error: {message}\n")
    sys.exit(1)


def no_arguments(command: str, argv) -> None:
    """Every option is a --flag: anything else on the command line ends the program in one line."""
    if len(argv) > 1:
        fail(command, f"unexpected arguments {' '.join(argv[1:])}: all options are --flags")


@contextlib.contextmanager
def one_line_errors(command: str):
    """Inside, an error written for the user (`errors.UserError`) or a write the file system refused
    (full disk, I/O error) ends the program with one line and exit status 1, never a traceback."""
    import tensorflow as tf

    from mobilenet_tf import errors

    try:
        yield
    except errors.UserError as error:
        fail(command, str(error))
    except (OSError, tf.errors.OpError) as error:
        reason = errors.write_failure(error)
        if reason is None:
            raise
        fail(command, f"cannot write {reason}; free space (or fix the disk) and run the same command again")


def run_app(main, flags_module: str) -> None:
    """`app.run(main)`, with the flags defined in `flags_module` listed by `--help` (absl lists
    only the key flags of sys.argv[0], the console script or `-m` module)."""
    from absl import app
    from absl import flags as absl_flags

    for flag in absl_flags.FLAGS.get_flags_for_module(flags_module):
        absl_flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
