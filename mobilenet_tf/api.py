"""The Python surface for Keras users: a MobileNet in one call, a trained run back as a Keras model.

    import mobilenet_tf
    model = mobilenet_tf.create_model("mobilenet_v2", pretrained="imagenet", num_classes=5)
    model = mobilenet_tf.load_model("runs/photos")      # model.class_names: its classes

Every model either returns takes RGB pixels 0-255 ([batch, H, W, 3], float), as the exports take
them, and normalizes inside; with the top it returns float32 probabilities.
"""

from __future__ import annotations

import os

import keras

from mobilenet_tf import config, models, paths
from mobilenet_tf.models import timm_archs

# ModelConfig fields `create_model` takes as options (the rest are set by its own arguments, by a
# checkpoint, or are a run's bookkeeping).
_OPTIONS = ("dropout", "bn_momentum", "bn_epsilon", "weight_decay", "minimalistic", "stochastic_depth", "sync_bn")


def create_model(name: str, *, pretrained: str | None = None, num_classes: int = 1000, image_size=None,
                 alpha: float | None = None, include_top: bool = True, **options) -> keras.Model:
    """A MobileNet as a `keras.Model` taking 0-255 RGB pixels.

    Args:
      name: one of `MODEL_NAMES` (`mobilenet_v1` ... `mobilenet_v4_hybrid_large`), or a timm Hub id
        (`timm/mobilenetv4_conv_small.e2400_r224_in1k`) or checkpoint folder, which then is also
        `pretrained`.
      pretrained: starting weights, as `mobilenet-train --pretrained` takes them: "imagenet" or
        a keras.applications weight file (V1-V3), or a timm checkpoint (a Hub id or a folder),
        whose architecture, input size and normalization the model takes.
      num_classes: the classifier's size; another than the weights' keeps their backbone and gives
        a fresh classifier.
      image_size: an int or (height, width), each at least 32; default: the family's (224; 256
        for V4-M, 384 for V4-L) or the checkpoint's.
      alpha: the width multiplier: 1.0 unless a checkpoint says otherwise (which may not be
        contradicted).
      include_top: False returns the last feature map (no pooling, no classifier), for a head of
        your own.
      **options: any of dropout, bn_momentum, bn_epsilon, weight_decay (L2 on kernels),
        minimalistic (V3), stochastic_depth (V4), sync_bn.

    The model's attribute `class_names` holds the weights' class names when the classifier is
    theirs (ImageNet's), else None.

    Raises:
      ValueError: an unknown name or option, a width or size the model cannot take, weights that do
        not fit; the message names the argument and what would work.
      FileNotFoundError: `pretrained` names no file or folder, or a Hub id that cannot be fetched.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"create_model: unknown option(s) {', '.join(unknown)}; it takes {', '.join(_OPTIONS)}")
    if name not in models.MODEL_NAMES and pretrained is None and timm_archs.is_timm_source(name):
        name, pretrained = "", name
    checkpoint = _timm_checkpoint(pretrained)
    fields = dict(options)
    if checkpoint is not None:
        arch = {key: value for key, value in checkpoint.model.items() if key != "image_size"}
        for key, given in (("name", name), ("alpha", alpha)):
            if given and given != arch[key]:
                raise ValueError(f"{key}={given!r}: pretrained={pretrained!r} is timm's {checkpoint.architecture}, a "
                                 f"{config.ModelConfig(**arch).describe()}; leave {key} out or use another checkpoint")
        fields.update(arch)
        name, alpha = arch["name"], arch["alpha"]
        image_size = image_size or checkpoint.model["image_size"]
    if name not in models.MODEL_NAMES:
        raise ValueError(f"name={name!r}: not a MobileNet we build; use one of {', '.join(models.MODEL_NAMES)}, or a "
                         f"timm Hub id such as 'timm/mobilenetv4_conv_small.e2400_r224_in1k'")
    alpha = 1.0 if alpha is None else alpha
    lo, hi = models.ALPHA_RANGES[name]
    if not lo <= alpha <= hi:
        raise ValueError(f"alpha={alpha}: {name} takes widths {lo} to {hi}")
    size = image_size or models.DEFAULT_IMAGE_SIZES.get(name, 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < models.MIN_IMAGE_SIZE:
        raise ValueError(f"image_size={image_size}: give an int or (height, width), each at least {models.MIN_IMAGE_SIZE}")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes}: must be at least 1")
    if fields.get("minimalistic") and name not in models.MINIMALISTIC:
        raise ValueError(f"minimalistic=True: {name} has none; {' and '.join(models.MINIMALISTIC)} do")
    if fields.get("stochastic_depth") and name not in models.STOCHASTIC_DEPTH:
        raise ValueError(f"stochastic_depth: {name} has none; the V4 models do")
    if pretrained and checkpoint is None:
        _check_applications(pretrained, name, alpha, fields.get("minimalistic", False))
    model_cfg = config.ModelConfig(name=name, alpha=alpha, image_size=size, num_classes=num_classes,
                                   **{"bn_epsilon": config.ModelConfig.bn_epsilon, **fields})
    from mobilenet_tf.models.build import build_from_config
    from mobilenet_tf.models.pretrained import load_pretrained
    from mobilenet_tf.models.timm_archs import TimmError

    model = build_from_config(model_cfg, include_preprocessing=True, include_top=include_top)
    class_names = None
    if pretrained:
        try:
            load_pretrained(model, model_cfg, pretrained)
        except TimmError as error:
            raise ValueError(f"pretrained={pretrained!r}: {error}") from None
        weights_classes = checkpoint.num_classes if checkpoint is not None else 1000
        if include_top and num_classes == weights_classes:
            class_names = checkpoint.class_names if checkpoint is not None else timm_archs.class_names(None, 1000)
    model.class_names = class_names
    return model


def load_model(path: str) -> keras.Model:
    """The Keras model of a training run or an export, taking 0-255 RGB pixels and returning the
    probabilities `mobilenet-predict` gives for them; its attribute `class_names` holds the classes.

    Args:
      path: a run's model_dir (its newest checkpoint; the moving average of the weights when the
        run kept one: a trainable model, the quantization-aware twin for a `--qat` run), a
        `.keras` file (`mobilenet-export --keras`; its labels.txt beside it), or a SavedModel
        export version (or the export base: its newest version; a model for inference only).

    Raises:
      FileNotFoundError: `path` is none of these.
    """
    if os.path.isfile(path) and path.endswith(".keras"):
        model = keras.saving.load_model(path)
        labels = os.path.join(os.path.dirname(os.path.abspath(path)), "labels.txt")
        model.class_names = _labels(labels) if os.path.isfile(labels) else None
        return model
    kind = paths.kind_of(path)
    if kind == "checkpoint":
        from mobilenet_tf import export
        from mobilenet_tf.checkpoint import restore_model

        trained, cfg = restore_model(path)
        model = export.serving_model(trained, cfg)
        model.class_names = tuple(cfg.model.class_names)
        return model
    if kind in ("saved_model", "model_base"):
        version = path if kind == "saved_model" else os.path.join(path, str(paths.next_version(path) - 1))
        return _saved_model(version)
    raise FileNotFoundError(f"load_model({path!r}): not a training run's model_dir, a .keras file or a SavedModel "
                            f"export (<model_dir>/export or <model_dir>/export/<version>)")


def _saved_model(version: str) -> keras.Model:
    import tensorflow as tf

    signature = tf.saved_model.load(version).signatures["serving_pixels"]
    height, width = signature.structured_input_signature[1]["pixels"].shape[1:3]
    inputs = keras.Input((height, width, 3))
    outputs = keras.layers.TFSMLayer(version, call_endpoint="serving_pixels", name="saved_model")(inputs)
    model = keras.Model(inputs, outputs["probabilities"], name=os.path.basename(os.path.normpath(version)))
    model.class_names = _labels(os.path.join(version, "assets", "labels.txt"))
    return model


def _labels(path: str) -> tuple[str, ...]:
    with open(path) as f:
        return tuple(line.rstrip("\n") for line in f)


def _timm_checkpoint(pretrained):
    if not pretrained or not timm_archs.is_timm_source(pretrained):
        return None
    try:
        return timm_archs.resolve(pretrained)
    except timm_archs.TimmError as error:
        message = str(error).replace(f"--pretrained={pretrained}", f"pretrained={pretrained!r}")
        raise (FileNotFoundError if "cannot reach" in message or "not in the cache" in message or "no such" in message
               else ValueError)(message) from None


def _check_applications(pretrained: str, name: str, alpha: float, minimalistic: bool) -> None:
    if pretrained != "imagenet" and not os.path.isfile(pretrained):
        raise FileNotFoundError(f"pretrained={pretrained!r}: no such file or folder; give 'imagenet', a keras.applications "
                                f"weight file, or a timm checkpoint (timm/<name> or a folder)")
    alphas = models.MINIMALISTIC_ALPHAS if minimalistic else models.ALPHAS[name]
    if alpha not in alphas:
        raise ValueError(f"pretrained={pretrained!r}: keras.applications has no weights of {name} at alpha {alpha}"
                         + (f"; it has {', '.join(map(str, alphas))}" if alphas else "; start from a timm checkpoint"))

