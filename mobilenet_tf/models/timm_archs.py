"""timm's MobileNet checkpoints: which of our models each of timm's architectures is, and where a
checkpoint's files are (a Hugging Face Hub id or a folder in the Hub's layout).

No TensorFlow: the command line reads a checkpoint's `config.json` (the architecture, the input
size, mean/std, crop and interpolation) before it loads TensorFlow, and fetches the weights then,
so a missing network or a bad file is one line before anything is written. `timm_weights` loads
the tensors into a model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from mobilenet_tf.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# A Hub id as timm names its checkpoints: "timm/mobilenetv4_conv_small.e2400_r224_in1k", or
# with timm's "hf-hub:" prefix.
_HUB_ID = re.compile(r"(?:hf-hub:)?([\w.-]+/[\w.-]+)")
_CLASSES_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "imagenet_classes.tsv")

# PyTorch's batch norm epsilon, which timm's own MobileNets keep; its `tf_` ports of TF-slim's
# weights keep TensorFlow's 1e-3 and TensorFlow's padding: keras.applications' network.
_TIMM = {"layout": "timm", "bn_epsilon": 1e-5}
_TF = {"layout": "keras", "bn_epsilon": 1e-3}


def _arch(name, alpha, base=_TIMM, **fields) -> dict:
    return {"name": name, "alpha": alpha, **base, **fields}


# timm's architecture (config.json's "architecture") -> the ModelConfig fields that build it here.
ARCHITECTURES = {
    "mobilenetv1_100": _arch("mobilenet_v1", 1.0),
    "mobilenetv1_100h": _arch("mobilenet_v1", 1.0, variant="head"),
    "mobilenetv1_125": _arch("mobilenet_v1", 1.25),
    **{f"mobilenetv2_{w:03d}": _arch("mobilenet_v2", w / 100) for w in (35, 50, 75, 100, 140)},
    "mobilenetv2_110d": _arch("mobilenet_v2", 1.1, depth_multiplier=1.2),
    "mobilenetv2_120d": _arch("mobilenet_v2", 1.2, depth_multiplier=1.4),
    **{f"mobilenetv3_large_{w:03d}": _arch("mobilenet_v3_large", w / 100) for w in (75, 100)},
    "mobilenetv3_large_150d": _arch("mobilenet_v3_large", 1.5, depth_multiplier=1.2),
    **{f"mobilenetv3_small_{w:03d}": _arch("mobilenet_v3_small", w / 100) for w in (50, 75, 100)},
    "mobilenetv3_rw": _arch("mobilenet_v3_large", 1.0, variant="rw", bn_epsilon=1e-3),
    **{f"tf_mobilenetv3_{size}_{w:03d}": _arch(f"mobilenet_v3_{size}", w / 100, _TF)
       for size in ("large", "small") for w in (75, 100)},
    **{f"tf_mobilenetv3_{size}_minimal_100": _arch(f"mobilenet_v3_{size}", 1.0, _TF, minimalistic=True)
       for size in ("large", "small")},
    "mobilenetv4_conv_small_035": _arch("mobilenet_v4_conv_small", 0.35),
    "mobilenetv4_conv_small_050": _arch("mobilenet_v4_conv_small", 0.5),
    **{f"mobilenetv4_{kind}": _arch(f"mobilenet_v4_{kind}", 1.0)
       for kind in ("conv_small", "conv_medium", "conv_large", "hybrid_medium", "hybrid_large")},
    **{f"mobilenetv4_hybrid_{size}_075": _arch(f"mobilenet_v4_hybrid_{size}", 0.75) for size in ("medium", "large")},
}
# The ModelConfig fields a checkpoint's architecture decides (the rest keep the preset's values).
ARCH_FIELDS = ("name", "alpha", "layout", "bn_epsilon", "depth_multiplier", "variant", "minimalistic")


class TimmError(UserError, ValueError):
    """A timm checkpoint that cannot be used; the message names it and what to do."""


@dataclasses.dataclass(frozen=True)
class TimmCheckpoint:
    """A timm checkpoint on disk and what its config.json says.

    Attributes:
      source: as given (a Hub id or a folder).
      directory: the folder holding config.json and model.safetensors.
      architecture: timm's name of the network.
      num_classes: the classifier's size.
      model: ModelConfig fields (the architecture's, input size, mean and std).
      eval_crop_fraction, eval_transform: timm's evaluation transform for it (`preprocess.EVAL_TRANSFORMS`).
      class_names: one per class (ImageNet-1k's names for a 1000-class checkpoint).
    """

    source: str
    directory: str
    architecture: str
    num_classes: int
    model: dict
    eval_crop_fraction: float
    eval_transform: str
    class_names: tuple[str, ...]

    @property
    def weights(self) -> str:
        return os.path.join(self.directory, WEIGHTS_FILE)


def is_timm_source(source: str) -> bool:
    """Whether `--pretrained=source` names a timm checkpoint (a Hub id or a folder), not
    keras.applications' "imagenet" or one of its weight files."""
    if os.path.isdir(source):
        return True
    return not os.path.exists(source) and _HUB_ID.fullmatch(source) is not None


def resolve(source: str) -> TimmCheckpoint:
    """The checkpoint `source` names, fetched into the Hugging Face cache when it is a Hub id (once:
    a cached checkpoint is read from the cache, HF_HOME and HF_HUB_OFFLINE honored).

    Raises:
      TimmError: the files cannot be fetched or read, or the architecture is not one we build.
    """
    flag = f"--pretrained={source}"
    directory = source if os.path.isdir(source) else _fetch(source, flag)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(directory, name)):
            raise TimmError(f"{flag}: no {name} in {directory}; a timm checkpoint folder holds {CONFIG_FILE} and "
                            f"{WEIGHTS_FILE} (hf download timm/<name> --local-dir DIR)")
    config_path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(config_path) as f:
            hf_config = json.load(f)
        architecture = hf_config["architecture"]
        pretrained = hf_config.get("pretrained_cfg", {})
        num_classes = int(hf_config.get("num_classes", pretrained.get("num_classes", 1000)))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TimmError(f"{flag}: cannot read {config_path} ({error}); fetch the checkpoint again") from None
    if architecture not in ARCHITECTURES:
        raise TimmError(f"{flag}: timm architecture {architecture!r} is not one we build; we build "
                        f"{', '.join(ARCHITECTURES)}")
    check_weights_file(os.path.join(directory, WEIGHTS_FILE), flag)
    height, width = pretrained.get("input_size", (3, 224, 224))[1:]
    model = {**ARCHITECTURES[architecture], "image_size": (int(height), int(width)),
             "mean": tuple(float(v) for v in pretrained.get("mean", (0.485, 0.456, 0.406))),
             "std": tuple(float(v) for v in pretrained.get("std", (0.229, 0.224, 0.225)))}
    return TimmCheckpoint(
        source=source, directory=directory, architecture=architecture, num_classes=num_classes, model=model,
        eval_crop_fraction=float(pretrained.get("crop_pct", 0.875)),
        eval_transform="timm_bicubic" if pretrained.get("interpolation", "bicubic") == "bicubic" else "timm_bilinear",
        class_names=class_names(hf_config.get("label_names"), num_classes),
    )


def check_weights_file(path: str, flag: str) -> None:
    """A readable safetensors file: its header parses and its tensors fill the file exactly (a
    truncated download does not)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            f.keys()
    except Exception as error:  # safetensors raises its own SafetensorError, and OSError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TimmError(f"{flag}: {path} is not a readable safetensors file ({reason}): truncated or corrupt; "
                        f"fetch it again") from None


def class_names(label_names, num_classes: int) -> tuple[str, ...]:
    """The checkpoint's class names: its config's label_names (WordNet synsets read as their first
    lemma where ImageNet-1k has them), ImageNet-1k's for a 1000-class checkpoint without any, else
    the class indices."""
    lemmas = {}
    with open(_CLASSES_FILE) as f:
        for line in f:
            if not line.startswith("#"):
                synset, lemma = line.rstrip("\n").split("\t")
                lemmas[synset] = lemma.split(",")[0]
    if isinstance(label_names, list) and len(label_names) == num_classes:
        return tuple(lemmas.get(name, name) for name in map(str, label_names))
    if num_classes == len(lemmas):
        return tuple(lemmas.values())
    return tuple(str(i) for i in range(num_classes))


def _fetch(source: str, flag: str) -> str:
    """The local folder of Hub checkpoint `source` (from the cache, else downloaded)."""
    match = _HUB_ID.fullmatch(source)
    if match is None:
        raise TimmError(f"{flag}: no such folder, and not a Hugging Face Hub id (timm/<name>)")
    repo = match.group(1)
    import huggingface_hub
    from huggingface_hub import errors

    cached = [huggingface_hub.try_to_load_from_cache(repo, name) for name in (CONFIG_FILE, WEIGHTS_FILE)]
    if all(isinstance(path, str) for path in cached):
        return os.path.dirname(cached[0])
    verbosity = huggingface_hub.utils.logging.get_verbosity()
    huggingface_hub.utils.logging.set_verbosity_error()  # not its retry warnings: one line, ours
    try:
        return huggingface_hub.snapshot_download(repo, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE])
    except errors.RepositoryNotFoundError:
        raise TimmError(f"{flag}: the Hugging Face Hub has no repository {repo}; timm's MobileNets are "
                        f"timm/<architecture>.<tag>, e.g. timm/mobilenetv4_conv_small.e2400_r224_in1k") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, OSError) as error:
        offline = huggingface_hub.constants.HF_HUB_OFFLINE
        why = "HF_HUB_OFFLINE is set" if offline else f"cannot reach the Hugging Face Hub ({type(error).__name__})"
        raise TimmError(f"{flag}: {why} and {repo} is not in the cache ({huggingface_hub.constants.HF_HUB_CACHE}); "
                        f"where there is a network run `hf download {repo} --local-dir DIR`, then pass "
                        f"--pretrained=DIR") from None
    finally:
        huggingface_hub.utils.logging.set_verbosity(verbosity)
