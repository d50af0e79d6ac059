"""Starting weights: keras.applications' ImageNet weight files, or timm's checkpoints (`timm_weights`)."""

from __future__ import annotations

import os
import re

import keras

from mobilenet_tf.errors import UserError
from mobilenet_tf.models import HEAD_LAYERS, TOP_LAYERS
from mobilenet_tf.models.build import copy_weights

APPLICATIONS = {"mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2", "mobilenet_v3_large": "MobileNetV3Large",
                "mobilenet_v3_small": "MobileNetV3Small"}


class PretrainedError(UserError, OSError):
    """keras.applications' weight file could not be fetched; the message names the file."""


def load_pretrained(model: keras.Model, model_cfg, source: str) -> str:
    """Fill `model` (built from `model_cfg`, a `config.ModelConfig`) from `source`: a timm checkpoint
    (a Hub id or a folder, see `timm_archs`) or keras.applications' weights (`load_applications`).
    Returns what filled it, for the log: "timm's <architecture>" or "keras.applications'".
    """
    from mobilenet_tf.models import timm_archs

    if timm_archs.is_timm_source(source):
        from mobilenet_tf.models.timm_weights import load_timm

        checkpoint = timm_archs.resolve(source)
        load_timm(model, model_cfg, checkpoint)
        return f"timm's {checkpoint.architecture}"
    load_applications(model, model_cfg.name, model_cfg.alpha, source, model_cfg.minimalistic)
    return "keras.applications'"


def load_applications(model: keras.Model, name: str, alpha: float, source: str, minimalistic: bool = False) -> None:
    """Fill `model` from keras.applications' ImageNet weights, copied by layer name.

    `source` is "imagenet" (keras.applications fetches the file with keras.utils.get_file, or
    finds it in ~/.keras/models) or the path of such a file (a `*_no_top*.h5` file has no
    classifier, nor V3's `conv_2`). The classifier is copied only when `model` also has 1000 classes; otherwise it
    keeps its fresh initialization. Convolution weights do not depend on the input size, so the
    reference model is built at 224 whatever size `model` has. `minimalistic` picks V3's
    minimalistic weights (`weights_mobilenet_v3_{large,small}_minimalistic_224_1.0_float*.h5`).

    Raises:
      PretrainedError: "imagenet" and the file is neither in ~/.keras/models nor downloadable.
    """
    include_top = "no_top" not in os.path.basename(source)
    variant = {"minimalistic": minimalistic} if minimalistic else {}
    try:
        reference = getattr(keras.applications, APPLICATIONS[name])(
            input_shape=(224, 224, 3), alpha=alpha, include_top=include_top, weights=source, classes=1000, **variant
        )
    except Exception as error:  # keras.utils.get_file raises a bare Exception when the fetch fails
        fetch = re.match(r"URL fetch failure on (\S+): (.*)", str(error))
        if not fetch:
            raise
        url = fetch.group(1).rstrip(":")
        raise PretrainedError(
            f"--pretrained={source}: cannot download {url} ({fetch.group(2).strip()}); fetch that file where there "
            f"is a network, then pass --pretrained=PATH/{url.rsplit('/', 1)[-1]}"
        ) from None
    keep_head = include_top and model.output_shape[-1] == 1000
    copy_weights(reference, model, skip=() if keep_head else HEAD_LAYERS if include_top else TOP_LAYERS)
