"""Start-up of `convert`'s worker processes, in a module that does not import TensorFlow.

stderr is pointed at /dev/null before TensorFlow loads, so neither its start-up messages (one set
per worker) nor libjpeg's complaints about broken files reach the terminal: the skip list in
dataset_info.json names those files, and errors reach the parent as exceptions.
"""

import os


def init(counter) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    from mobilenet_tf.data import convert

    convert.init_worker(counter, threads=1)
