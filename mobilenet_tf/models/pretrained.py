"""Starting weights from keras.applications' ImageNet weight files."""

from __future__ import annotations

import os

import keras

from mobilenet_tf.models import HEAD_LAYERS, copy_weights

APPLICATIONS = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2"}


def load_pretrained(model: keras.Model, name: str, alpha: float, source: str) -> None:
    """Fill `model` from keras.applications' ImageNet weights, copied by layer name.

    `source` is "imagenet" (keras.applications fetches the file with keras.utils.get_file, or
    finds it in ~/.keras/models) or the path of such a file (a `*_no_top.h5` file has no
    classifier). The classifier is copied only when `model` also has 1000 classes; otherwise it
    keeps its fresh initialization. Convolution weights do not depend on the input size, so the
    reference model is built at 224 whatever size `model` has.
    """
    include_top = "no_top" not in os.path.basename(source)
    reference = getattr(keras.applications, APPLICATIONS[name])(
        input_shape=(224, 224, 3), alpha=alpha, include_top=include_top, weights=source, classes=1000
    )
    keep_head = include_top and model.output_shape[-1] == 1000
    copy_weights(reference, model, skip=() if keep_head else HEAD_LAYERS)
