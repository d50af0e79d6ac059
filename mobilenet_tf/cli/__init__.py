"""Thin absl apps, one per command: parse flags, build the config, call the library.

Each command answers `--help`, a bad or unknown flag and a missing path before TensorFlow is
imported (its modules import only `flags`, which imports no TensorFlow), then loads TensorFlow with
`load_tensorflow`, which keeps TensorFlow's C++ start-up lines off the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from mobilenet_tf import chatter


def _verbose() -> bool:
    """--verbosity=1 (or more), or TF_CPP_MIN_LOG_LEVEL=0 in the environment: TensorFlow's own lines too."""
    from absl import flags as absl_flags

    flag = absl_flags.FLAGS["verbosity"]
    return (flag.present and flag.value >= 1) or chatter.shown()


def load_tensorflow(command: str) -> None:
    """Import TensorFlow and Keras and let TensorFlow find its devices, keeping its start-up chatter
    (`chatter.filtered`) off the terminal unless `_verbose()`. TensorFlow's later C++ log lines are
    off too (TF_CPP_MIN_LOG_LEVEL=3; 0 with --verbosity=1): an error that matters reaches Python as
    an exception, which the command reports in one line, and the runtime's own lines about it (a
    lost peer's aborted collectives, say) would only repeat it with op names. Finding the devices
    initializes no runtime: a multi-worker strategy can still be created afterwards."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if _verbose() else "3")
    with chatter.filtered(f"{command}: TensorFlow"):
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA platform's start-up lines come here


def show_progress_logs() -> None:
    """absl INFO lines from this package; TensorFlow's own INFO lines (saver sharding, asset
    writing) would drown them, so only its warnings and errors pass (all of them with --verbosity=1)."""
    from absl import logging as absl_logging

    if _verbose():
        return
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
    (full disk, I/O error) ends the program with one line and exit status 1, never a traceback.
    Usable before TensorFlow is loaded (its errors are caught once it is)."""
    from mobilenet_tf import errors

    tensorflow = sys.modules.get("tensorflow")
    refused = (OSError, tensorflow.errors.OpError) if tensorflow else OSError
    try:
        yield
    except errors.UserError as error:
        fail(command, str(error))
    except refused as error:
        reason = errors.write_failure(error)
        if reason is None:
            raise
        fail(command, f"cannot write {reason}; free space (or fix the disk) and run the same command again")


def run_app(main, flags_module: str, command: str) -> None:
    """`app.run(main)`, with the flags defined in `flags_module` listed by `--help` (absl lists
    only the key flags of sys.argv[0], the console script or `-m` module), a flag that does not
    parse answered in one line (`<command>: error: ...`, exit status 1) instead of absl's two, and
    help ending with status 0."""
    from absl import app
    from absl import flags as absl_flags

    for flag in absl_flags.FLAGS.get_flags_for_module(flags_module):
        absl_flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def parse(argv):
        try:
            return absl_flags.FLAGS(argv)
        except absl_flags.Error as error:
            fail(command, f"{error}; --helpshort lists the flags")
        except SystemExit:  # absl's --help, --helpshort and --helpfull print, then exit with status 1
            asked = {arg.lstrip("-").partition("=")[0] for arg in argv[1:]}
            if asked & {"help", "helpshort", "helpfull", "helpxml", "?"}:
                sys.exit(0)
            raise

    app.run(main, flags_parser=parse)
