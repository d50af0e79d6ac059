"""absl flag definitions and flags -> Config. The only library module that reads `FLAGS`.

Every flag defaults to None, meaning "as the preset says"; a flag given on the command line
overrides that one field. Validation happens here, once: a bad value ends the program with one
line naming the flag and what to do, before any heavy work.
"""

from __future__ import annotations

import dataclasses
import re

from absl import flags

from mobilenet_tf import config, distribute, models, optim
from mobilenet_tf.data import sources

FLAGS = flags.FLAGS


class FlagError(ValueError):
    """A flag value that cannot work; the message names the flag."""


def define_train_flags() -> None:
    flags.DEFINE_string("preset", "digits", f"Named recipe to start from: {', '.join(config.PRESETS)}.")
    flags.DEFINE_enum("model", None, models.MODEL_NAMES, "Architecture.")
    flags.DEFINE_float("alpha", None, "Width multiplier (V1: 0.25-1.0, V2: 0.35-1.4).")
    flags.DEFINE_string("image_size", None, "Input size: 224, or HEIGHTxWIDTH such as 192x256 (each >= 32).")
    flags.DEFINE_string("dataset", None, "digits (embedded default) or tfrecord:DIR.")
    flags.DEFINE_string("cache_dir", None, "Where the digits are materialized (default $MOBILENET_TF_CACHE "
                        "or ~/.cache/mobilenet_tf).")
    flags.DEFINE_string("model_dir", None, "Checkpoints, logs and exports (default runs/<model>_<dataset>).")
    flags.DEFINE_integer("epochs", None, "Epochs to train.")
    flags.DEFINE_integer("batch_size", None, "Global batch size (all replicas together).")
    flags.DEFINE_integer("seed", None, "Seed of weight init, data order and augmentation.")
    flags.DEFINE_enum("strategy", None, distribute.STRATEGIES, "tf.distribute strategy.")
    flags.DEFINE_enum("optimizer", None, optim.OPTIMIZERS, "Optimizer.")
    flags.DEFINE_float("learning_rate", None, "Peak learning rate (after warm-up).")
    flags.DEFINE_enum("lr_schedule", None, optim.SCHEDULES, "Decay after warm-up.")
    flags.DEFINE_float("warmup_epochs", None, "Linear warm-up length in epochs.")
    flags.DEFINE_float("label_smoothing", None, "Label smoothing.")
    flags.DEFINE_float("weight_decay", None, "L2 on kernels (decoupled decay with adamw).")
    flags.DEFINE_float("dropout", None, "Dropout before the classifier.")
    flags.DEFINE_integer("log_steps", None, "A log line every this many steps.")
    flags.DEFINE_integer("checkpoint_steps", None, "Also checkpoint every this many steps (0: epoch ends only).")
    flags.DEFINE_integer("keep_checkpoints", None, "Checkpoints kept.")


# flag name -> (config section, field)
_FIELDS = {
    "model": ("model", "name"),
    "alpha": ("model", "alpha"),
    "image_size": ("model", "image_size"),
    "dropout": ("model", "dropout"),
    "weight_decay": ("model", "weight_decay"),
    "dataset": ("data", "dataset"),
    "cache_dir": ("data", "cache_dir"),
}
for _section in ("train",):
    for _field in dataclasses.fields(config.TrainConfig):
        _FIELDS.setdefault(_field.name, (_section, _field.name))


def parse_image_size(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", value)
    if not match:
        raise FlagError(f"--image_size={value}: give one number (224) or HEIGHTxWIDTH (192x256)")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def config_from_flags() -> config.Config:
    """The validated Config: the preset with every flag that was given applied over it."""
    if FLAGS.preset not in config.PRESETS:
        raise FlagError(f"--preset={FLAGS.preset}: unknown preset; use one of {', '.join(config.PRESETS)}")
    cfg = config.PRESETS[FLAGS.preset]
    sections: dict[str, dict] = {}
    for flag, (section, field) in _FIELDS.items():
        if flag in FLAGS and FLAGS[flag].value is not None:
            value = FLAGS[flag].value
            if flag == "image_size":
                value = parse_image_size(value)
            sections.setdefault(section, {})[field] = value
    cfg = config.replace(cfg, **sections)
    validate(cfg)
    return cfg


def validate(cfg: config.Config) -> None:
    """Raise FlagError naming the flag for any value that cannot work."""
    m, t = cfg.model, cfg.train
    alphas = models.ALPHAS[m.name]
    lo, hi = min(alphas), max(alphas)
    if not lo <= m.alpha <= hi:
        raise FlagError(f"--alpha={m.alpha}: {m.name} takes widths {lo} to {hi}")
    if min(m.image_size) < models.MIN_IMAGE_SIZE:
        raise FlagError(f"--image_size={m.image_size[0]}x{m.image_size[1]}: each side must be at least "
                        f"{models.MIN_IMAGE_SIZE}")
    problem = sources.check_spec(cfg.data.dataset)
    if problem:
        raise FlagError(f"--dataset={cfg.data.dataset}: {problem}")
    for name in ("epochs", "batch_size"):
        if getattr(t, name) < 1:
            raise FlagError(f"--{name}={getattr(t, name)}: must be at least 1")
    if t.learning_rate <= 0:
        raise FlagError(f"--learning_rate={t.learning_rate}: must be positive")
    for name in ("log_steps", "checkpoint_steps", "keep_checkpoints"):
        if getattr(t, name) < 0:
            raise FlagError(f"--{name}={getattr(t, name)}: must not be negative")
    if m.dropout is not None and not 0 <= m.dropout < 1:
        raise FlagError(f"--dropout={m.dropout}: must be in [0, 1)")
