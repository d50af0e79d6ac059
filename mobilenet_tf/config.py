"""Run configuration: frozen dataclasses passed down from the entry point, and named presets.

Flags are turned into one `Config` in `mobilenet_tf.flags` (validated there, once); everything below
the CLI takes these objects and trusts them.
"""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture. `None` fields take keras.applications' defaults for the family."""

    name: str = "mobilenet_v2"
    alpha: float = 1.0
    image_size: tuple[int, int] = (224, 224)
    num_classes: int | None = None  # None: from the data set
    class_names: tuple[str, ...] = ()  # filled from the data set when training starts
    dropout: float | None = None
    bn_momentum: float | None = None
    bn_epsilon: float = 1e-3
    weight_decay: float = 0.0  # L2 on conv/dense kernels; the penalty's gradient is weight_decay * w


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are augmented."""

    dataset: str = "digits"  # digits | tfrecord:DIR
    cache_dir: str = ""  # "" -> $MOBILENET_TF_CACHE or ~/.cache/mobilenet_tf
    # Inception-style crop (the TF/TPU ImageNet reference values).
    crop_area_range: tuple[float, float] = (0.08, 1.0)
    crop_aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
    random_flip: bool = True
    # Evaluation (and serving): central crop of this fraction of the shorter side, then resize.
    eval_crop_fraction: float = 0.875
    shuffle_buffer: int = 10_000
    cache: bool = False  # keep the encoded records in memory (small data sets)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation and its bookkeeping. `batch_size` is global (all replicas)."""

    model_dir: str = ""  # "" -> runs/<model>_<dataset>
    epochs: int = 1
    batch_size: int = 128
    seed: int = 0
    strategy: str = "auto"
    optimizer: str = "rmsprop"
    learning_rate: float = 0.008  # at batch_size; see optim.py for the schedule
    lr_schedule: str = "exponential"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.94
    decay_epochs: float = 2.5
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: no moving average of the weights
    log_steps: int = 100
    checkpoint_steps: int = 0  # 0: only at each epoch's end
    keep_checkpoints: int = 3


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What `mobilenet-export` and the end of training write."""

    export_dir: str = ""  # "" -> <model_dir>/export
    top_k: int = 5


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()


def replace(cfg: Config, **sections: dict) -> Config:
    """`cfg` with fields of its sections replaced: `replace(cfg, train={"epochs": 3})`."""
    return dataclasses.replace(
        cfg, **{name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    )


CONFIG_FILE = "config.json"


def to_json(cfg: Config) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=1)


def from_json(text: str) -> Config:
    """The Config `to_json` wrote (lists become the tuples the dataclasses hold)."""
    record = json.loads(text)
    sections = {}
    for field in dataclasses.fields(Config):
        cls = type(getattr(Config(), field.name))
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.get(field.name, {}).items()}
        sections[field.name] = cls(**values)
    return Config(**sections)


def save(cfg: Config, model_dir: str) -> None:
    """Write `model_dir/config.json` (temp name, then rename): what eval and export rebuild from."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CONFIG_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(to_json(cfg))
    os.replace(tmp, path)


def load(model_dir: str) -> Config:
    with open(os.path.join(model_dir, CONFIG_FILE)) as f:
        return from_json(f.read())


def default_cache_dir() -> str:
    return os.environ.get("MOBILENET_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mobilenet_tf")


# --- Presets -------------------------------------------------------------------------------------
# Each preset is the whole config of a published or tested run: flags given on the command line
# override single fields of it.

DIGITS = Config(
    # `mobilenet-train` (no flags): V2-1.0 at 32x32 on scikit-learn's 8x8 digits, 1437 train /
    # 360 held-out images. About 2 minutes on 2 CPU cores; held-out top-1 about 0.98.
    model=ModelConfig(
        name="mobilenet_v2", alpha=1.0, image_size=(32, 32), dropout=0.1, weight_decay=5e-5,
        # 25 epochs are ~1100 steps: keras.applications' 0.999 would leave BN statistics unconverged.
        bn_momentum=0.9,
    ),
    data=DataConfig(
        dataset="digits",
        # Digits are small and centred: mild crops only, and a mirrored 2 is no longer a 2.
        crop_area_range=(0.85, 1.0),
        crop_aspect_range=(0.8, 1.25),
        random_flip=False,
        eval_crop_fraction=1.0,
        cache=True,
    ),
    train=TrainConfig(
        epochs=25,
        batch_size=32,
        optimizer="adamw",
        learning_rate=0.003,
        lr_schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        log_steps=20,
    ),
)

PRESETS: dict[str, Config] = {"digits": DIGITS}
