"""Run configuration: frozen dataclasses passed down from the entry point, and named presets.

Flags are turned into one `Config` in `mobilenet_tf.flags` (validated there, once); everything below
the CLI takes these objects and trusts them.
"""

from __future__ import annotations

import dataclasses
import json
import os

# What the string fields below take (checked where flags become a Config).
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "float64")
OPTIMIZERS = ("rmsprop", "sgd", "momentum", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")
TFLITE_MODES = ("float32", "float16", "dynamic", "int8")
ONNX_OPSETS = range(13, 19)  # what tf2onnx 1.17.0 converts our models to
ONNX_INSTALL = "pip install -e .[onnx] (tf2onnx 1.17.0, onnx and onnxruntime)"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture. `None` fields take keras.applications' defaults for the family."""

    name: str = "mobilenet_v2"
    alpha: float = 1.0
    minimalistic: bool = False  # V3: keras.applications' minimalistic variant
    image_size: tuple[int, int] = (224, 224)
    num_classes: int | None = None  # None: from the data set
    class_names: tuple[str, ...] = ()  # filled from the data set when training starts
    dropout: float | None = None
    bn_momentum: float | None = None
    bn_epsilon: float = 1e-3
    weight_decay: float = 0.0  # L2 on conv/dense kernels; the penalty's gradient is weight_decay * w
    sync_bn: bool = False  # batch statistics over the global batch (all replicas)
    stochastic_depth: float = 0.0  # V4: peak drop rate of residual branches while training
    # Whose details the model follows where the references differ (models.LAYOUTS), a depth
    # multiplier and a named variant (models.VARIANTS): what a timm checkpoint's architecture sets.
    layout: str = "keras"
    depth_multiplier: float = 1.0
    variant: str = ""
    # The normalization the weights were trained with, per RGB channel in 0-1 units
    # ((pixels / 255 - mean) / std): 0.5 and 0.5 are [-1, 1], keras.applications'.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # Quantization-aware training: the fake-quantized twin (models/quantize.py), and the training
    # steps after which batch norm statistics and activation ranges stop moving (0: never).
    qat: bool = False
    qat_freeze_bn_steps: int = 0
    qat_freeze_range_steps: int = 0

    def describe(self) -> str:
        """The architecture and width as messages name them: "mobilenet_v3_small minimalistic alpha 1.0",
        "mobilenet_v2 alpha 1.2 depth 1.4 (timm)"."""
        extra = "".join(f" {word}" for word in (("minimalistic" if self.minimalistic else ""), self.variant) if word)
        depth = f" depth {self.depth_multiplier}" if self.depth_multiplier != 1.0 else ""
        layout = f" ({self.layout})" if self.layout != "keras" else ""
        return f"{self.name}{extra} alpha {self.alpha}{depth}{layout}"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are augmented."""

    dataset: str = "digits"  # digits | tfrecord:DIR | folder:DIR | tfds:NAME[:VERSION]
    cache_dir: str = ""  # "" -> $MOBILENET_TF_CACHE or ~/.cache/mobilenet_tf
    label_offset: int | None = None  # subtracted from record labels; None: from dataset_info.json
    tfds_data_dir: str = ""  # tfds:NAME; "" -> TFDS's default (~/tensorflow_datasets)
    # folder:DIR without train/ and val/: the share of each class held out, split by `split_seed`
    # (not the run's seed, so the held-out images stay put across runs).
    validation_fraction: float = 0.2
    split_seed: int = 0
    # Inception-style crop (the TF/TPU ImageNet reference values).
    crop_area_range: tuple[float, float] = (0.08, 1.0)
    crop_aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
    random_flip: bool = True
    # Evaluation (and serving): central crop of this fraction of the shorter side, and how it is
    # cropped and resized (preprocess.EVAL_TRANSFORMS: ours, or timm's for its checkpoints).
    eval_crop_fraction: float = 0.875
    eval_transform: str = "crop_bilinear"
    shuffle_buffer: int = 10_000
    cache: bool = False  # keep the encoded records in memory (small data sets)
    # Optional Keras 3 augmentations: RandAugment per image (ops per image, magnitude 0..1), then
    # MixUp / CutMix per batch (MixUp's Beta alpha; CutMix's factor, Keras drawing its alpha from
    # [0, factor]; both > 0: one of the two per batch). 0 turns them off.
    randaugment_ops: int = 0
    randaugment_magnitude: float = 0.5
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Bad records (bad checksum, shard cut short, image that does not decode) stop a run, naming
    # the shard; skipping them instead drops them, up to `max_bad_records` per epoch (None: 0.1%
    # of an epoch's examples).
    skip_bad_records: bool = False
    max_bad_records: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation and its bookkeeping. `batch_size` is global (all replicas)."""

    model_dir: str = ""  # "" -> runs/<model>_<dataset>
    epochs: int = 1
    batch_size: int = 128
    seed: int = 0
    deterministic: bool = False  # op determinism: bit-reproducible runs and resumes
    strategy: str = "auto"
    num_gpus: int | None = None  # None: all local GPUs
    tpu: str = ""
    xla: str = "auto"  # auto: compile the step on GPU/TPU only (XLA made CPU steps 8-13x slower here)
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16 | float64 (numerical checks)
    optimizer: str = "rmsprop"
    adam_beta1: float = 0.9  # adamw only (Keras' defaults)
    adam_epsilon: float = 1e-7
    learning_rate: float = 0.008  # peak rate, at `base_batch_size` when that is set
    base_batch_size: int = 0  # > 0: learning_rate scales linearly with batch_size / base_batch_size
    lr_schedule: str = "exponential"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.94
    decay_epochs: float = 2.5
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: no moving average of the weights
    log_steps: int = 100
    checkpoint_steps: int = 0  # 0: only at each epoch's end
    keep_checkpoints: int = 3
    # Starting weights: keras.applications' ImageNet file ("imagenet" or a path), or another run.
    pretrained: str = ""
    init_checkpoint: str = ""
    freeze_backbone_epochs: int = 0  # train only the head (BN frozen) for this many epochs
    # Knowledge distillation (distill.py): a run of ours whose predictions the student learns from
    # ("": none), the share of the loss its term takes, and the softmax temperature.
    teacher: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    unfreeze_lr_factor: float = 0.1  # then everything, at this fraction of the rate
    export: bool = True  # write the SavedModel when training ends
    # Stop (as a lost peer) when no step completes for this long, in seconds; 0: the larger of 10
    # minutes and 20 times the slowest step so far (watchdog.py).
    step_timeout: float = 0.0


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What `mobilenet-export` and the end of training write."""

    export_dir: str = ""  # "" -> <model_dir>/export
    top_k: int = 5
    # Serving refuses images whose header announces more pixels than this, before decoding them.
    max_pixels: int = 50_000_000
    tflite: tuple[str, ...] = ()  # any of float32, float16, dynamic, int8
    representative_examples: int = 200  # training images calibrating int8
    onnx: bool = False  # <export_dir>/onnx/model.onnx
    onnx_opset: int = 17
    onnx_nchw: bool = False  # input [batch, 3, H, W] instead of [batch, H, W, 3]
    keras: bool = False  # <export_dir>/keras/model.keras
    web: str = ""  # "int8" or "float32": <export_dir>/web/, a static page running that TFLite model


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
    from mobilenet_tf.rundir import write_atomic

    os.makedirs(model_dir, exist_ok=True)
    write_atomic(os.path.join(model_dir, CONFIG_FILE), to_json(cfg))


def load(model_dir: str) -> Config:
    with open(os.path.join(model_dir, CONFIG_FILE)) as f:
        return from_json(f.read())


def qat_finetune(cfg: Config) -> Config:
    """`--qat` on a float recipe: the fake-quantized twin, fine-tuned from a float run at a hundredth
    of the recipe's learning rate with no warm-up. QAT recipes fine-tune at a small fraction of the
    float rate (Model Garden: V2 at 1e-4 where its float run peaks at 0.064, 1/640; V3-Large at a
    tenth, but over 200 epochs). A short fine-tune has no time to recover from a larger step
    (measured in docs/quantization.md)."""
    return replace(cfg, model={"qat": True},
                   train={"learning_rate": cfg.train.learning_rate * 0.01, "warmup_epochs": 0.0})


def calibrates(cfg: Config) -> bool:
    """Whether exporting `cfg` calibrates int8 on training images: post-training quantization. A
    quantization-aware run never does; its int8 model takes the ranges it learned."""
    return "int8" in cfg.export.tflite and not cfg.model.qat


def default_cache_dir() -> str:
    return os.environ.get("MOBILENET_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mobilenet_tf")


# --- Presets -------------------------------------------------------------------------------------
# Each preset is the whole config of a published or tested run: flags given on the command line
# override single fields of it.

DIGITS = Config(
    # `mobilenet-train` (no flags): V2-1.0 at 32x32 on scikit-learn's 8x8 digits, 1437 train /
    # 360 held-out images. About 2.5 minutes on 2 CPU cores; held-out top-1 0.989 (0.975-0.997 seen).
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



def _imagenet(name: str, decay_rate: float) -> Config:
    """TF Model Garden's MobileNet ImageNet recipe (its `mobilenet_imagenet` experiment factory)."""
    return Config(
        model=ModelConfig(name=name, alpha=1.0, image_size=(224, 224), dropout=0.2, bn_momentum=0.997,
                          bn_epsilon=1e-3, weight_decay=1e-5),
        data=DataConfig(dataset=""),  # --dataset=tfrecord:DIR (mobilenet-convert) or tfds:imagenet2012
        train=TrainConfig(
            epochs=500, batch_size=1024, optimizer="rmsprop", learning_rate=0.008, base_batch_size=128,
            lr_schedule="exponential", warmup_epochs=5.0, decay_rate=decay_rate, decay_epochs=2.5,
            label_smoothing=0.1, log_steps=100, checkpoint_steps=5000, keep_checkpoints=5,
        ),
    )


# mobilenet-train --preset=mobilenet_v1_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# Model Garden reports 72.33 top-1 for this recipe on TPU (batch 4096, lr 0.256).
MOBILENET_V1_IMAGENET = _imagenet("mobilenet_v1", decay_rate=0.94)
# mobilenet-train --preset=mobilenet_v2_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# Model Garden reports 72.72 top-1 on TPU (batch 4096, lr 0.256) and 71.0 on 8 GPUs x 128 (lr 0.064,
# --precision=mixed_float16); add --ema_decay=0.9999 for the averaged weights.
MOBILENET_V2_IMAGENET = _imagenet("mobilenet_v2", decay_rate=0.96)

# mobilenet-train --preset=finetune --dataset=folder:/data/flowers --num_classes ... : a new head on
# keras.applications' ImageNet weights; the backbone (BN included) frozen for 3 epochs, then all but
# BN trained at a tenth of the rate. On tf_flowers-sized sets (5 classes, 3.7k images) expect ~0.9 top-1.
FINETUNE = Config(
    model=ModelConfig(name="mobilenet_v2", alpha=1.0, image_size=(224, 224), dropout=0.2),
    data=DataConfig(dataset=""),
    train=TrainConfig(
        epochs=10, batch_size=32, optimizer="adamw", learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=0.0,
        label_smoothing=0.1, log_steps=20, pretrained="imagenet", freeze_backbone_epochs=3, unfreeze_lr_factor=0.1,
    ),
)

# mobilenet-train --preset=mobilenet_v2_qat_imagenet --dataset=tfrecord:/data/imagenet \
#     --init_checkpoint=runs/<a mobilenet_v2_imagenet run> --batch_size=512
# TF Model Garden's QAT recipe (imagenet_mobilenetv2_qat_gpu.yaml): the fake-quantized twin of a
# trained float V2, RMSProp from 1e-4 (at batch 512) decayed x0.9 every half epoch, 100 epochs,
# label smoothing 0.1, L2 1e-7, dropout 0.1. Model Garden reports 72.79 top-1 int8 on 8 GPUs (float
# 72.78, post-training int8 72.39).
MOBILENET_V2_QAT_IMAGENET = replace(
    MOBILENET_V2_IMAGENET,
    model={"qat": True, "dropout": 0.1, "weight_decay": 1e-7},
    train={"epochs": 100, "batch_size": 512, "learning_rate": 1e-4, "base_batch_size": 512, "warmup_epochs": 0.0,
           "decay_rate": 0.9, "decay_epochs": 0.5, "checkpoint_steps": 2502},
)

# mobilenet-train --preset=mobilenet_v2_quant_imagenet --dataset=tfrecord:/data/imagenet \
#     --init_checkpoint=runs/<a mobilenet_v2_imagenet run>
# MindSpore's MobileNetV2-quant: the quantized twin fine-tuned from a float checkpoint for 60 epochs
# with momentum 0.9, weight decay 4e-5 and label smoothing 0.1; MindSpore reports 71.78 top-1 int8.
# Its learning rate was not at hand here: the peak (0.05 at batch 256, scaled with the batch,
# cosine decay, no warm-up) is ours, a fine-tune's fraction of the float recipe's.
MOBILENET_V2_QUANT_IMAGENET = replace(
    MOBILENET_V2_IMAGENET,
    model={"qat": True, "weight_decay": 4e-5},
    train={"epochs": 60, "batch_size": 256, "optimizer": "momentum", "learning_rate": 0.05, "base_batch_size": 256,
           "lr_schedule": "cosine", "warmup_epochs": 0.0},
)

# mobilenet-train --preset=mobilenet_v3_large_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# TF Model Garden's imagenet_mobilenetv3large_tpu.yaml ("~75.7% top-1"): AdamW (weight decay 0.1,
# decoupled, scaled by the rate), lr 0.004 at batch 4096 (scaled linearly with the batch), cosine to
# 0 with no warm-up, 700 epochs (218,000 steps at 4096), label smoothing 0.1, dropout 0.2, BN
# momentum 0.997, no EMA. Deviations: Model Garden augments with AutoAugment (policy v0), which we do
# not have: RandAugment, 2 ops at magnitude 0.5, stands in (our choice); Model Garden decays every
# weight but batch norm's, we also spare the biases (as timm and big_vision do).
MOBILENET_V3_LARGE_IMAGENET = Config(
    model=ModelConfig(name="mobilenet_v3_large", alpha=1.0, image_size=(224, 224), dropout=0.2, bn_momentum=0.997,
                      bn_epsilon=1e-3, weight_decay=0.1),
    data=DataConfig(dataset="", randaugment_ops=2, randaugment_magnitude=0.5),
    train=TrainConfig(
        epochs=700, batch_size=4096, optimizer="adamw", learning_rate=0.004, base_batch_size=4096,
        lr_schedule="cosine", warmup_epochs=0.0, label_smoothing=0.1, log_steps=100, checkpoint_steps=5000,
        keep_checkpoints=5,
    ),
)

# mobilenet-train --preset=mobilenet_v3_small_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# TF Model Garden's imagenet_mobilenetv3small_tpu.yaml ("67.5% top-1 and 87.7% top-5"): RMSProp (rho
# 0.9, momentum 0.9, eps 0.002), lr 0.02 x batch/192 (0.426 at 4096), 5 warm-up epochs, then x0.99
# every 3 epochs (staircase), EMA 0.9999, L2 1e-5, label smoothing 0.1, dropout 0.2, BN momentum
# 0.997, 1000 epochs, Inception crop and flip only. The rate is the one the file's comment derives
# (0.02 x batch/192, warm-up from 0); another revision of the file has 0.01 with warm-up from 0.001.
MOBILENET_V3_SMALL_IMAGENET = Config(
    model=ModelConfig(name="mobilenet_v3_small", alpha=1.0, image_size=(224, 224), dropout=0.2, bn_momentum=0.997,
                      bn_epsilon=1e-3, weight_decay=1e-5),
    data=DataConfig(dataset=""),
    train=TrainConfig(
        epochs=1000, batch_size=4096, optimizer="rmsprop", learning_rate=0.02, base_batch_size=192,
        lr_schedule="exponential", warmup_epochs=5.0, decay_rate=0.99, decay_epochs=3.0, label_smoothing=0.1,
        ema_decay=0.9999, log_steps=100, checkpoint_steps=5000, keep_checkpoints=5,
    ),
)

# mobilenet-train --preset=mobilenet_v3_finetune --dataset=folder:/data/flowers : `finetune` on
# keras.applications' MobileNetV3Large ImageNet weights (add --model=mobilenet_v3_small, --alpha=0.75
# or --minimalistic for the others that have weights): its classifier (`logits`) replaced, the rest
# frozen for 3 epochs, then all but batch norm at a tenth of the rate; dropout 0.2 as keras.applications.
MOBILENET_V3_FINETUNE = replace(FINETUNE, model={"name": "mobilenet_v3_large", "dropout": 0.2})

# TF Model Garden's MobileNet V4 recipes (official/vision/configs/experiments/image_classification/
# imagenet_mobilenetv4_conv_{small,medium,large}_tpu.yaml, which are the paper's Table 10): AdamW,
# cosine to 0 after a linear warm-up, label smoothing 0.1, RandAugment (2 ops, Cutout excluded).
# Deviations, all of them: our RandAugment is Keras' (its magnitude in [0, 1]: Model Garden's
# magnitude / 10, at most 1), applied to every image where Model Garden applies it to a share of
# them (S 0.5, M 0.7); our EMA starts at step 0 (Model Garden's at 1560); Model Garden decays every
# weight but batch norm's, we also spare the biases.

# mobilenet-train --preset=mobilenet_v4_conv_small_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# Conv-S at 224: 73.8 top-1 (the paper, Model Garden: "73.8% @ ~9623 epochs"). 9600 epochs at batch
# 4096, lr 0.002 x batch/4096, 5 warm-up epochs, AdamW weight decay 0.01 with beta1 0.6 and epsilon
# 1e-6, EMA 0.9999, dropout 0.3, BN momentum 0.95 and epsilon 1e-6, RandAugment magnitude 9. Model
# Garden adds an L2 penalty of 1e-5 to AdamW's decay; ours takes one or the other (with adamw,
# ModelConfig.weight_decay is the decoupled decay): the L2 term is left out.
MOBILENET_V4_CONV_SMALL_IMAGENET = Config(
    model=ModelConfig(name="mobilenet_v4_conv_small", alpha=1.0, image_size=(224, 224), dropout=0.3,
                      bn_momentum=0.95, bn_epsilon=1e-6, weight_decay=0.01),
    data=DataConfig(dataset="", randaugment_ops=2, randaugment_magnitude=0.9),
    train=TrainConfig(
        epochs=9600, batch_size=4096, optimizer="adamw", adam_beta1=0.6, adam_epsilon=1e-6, learning_rate=0.002,
        base_batch_size=4096, lr_schedule="cosine", warmup_epochs=5.0, label_smoothing=0.1, ema_decay=0.9999,
        log_steps=100, checkpoint_steps=5000, keep_checkpoints=5,
    ),
)
# mobilenet-train --preset=mobilenet_v4_conv_medium_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# Conv-M at 256: 79.9 top-1 (the paper, Model Garden: "79.9% @ 500 epochs"). 500 epochs at batch
# 4096, lr 0.004 x batch/4096, 5 warm-up epochs, AdamW weight decay 0.1, dropout 0.2, stochastic
# depth 0.075 (growing over the blocks), BN momentum 0.997, RandAugment magnitude 15 (ours: 1.0).
MOBILENET_V4_CONV_MEDIUM_IMAGENET = Config(
    model=ModelConfig(name="mobilenet_v4_conv_medium", alpha=1.0, image_size=(256, 256), dropout=0.2,
                      bn_momentum=0.997, bn_epsilon=1e-3, weight_decay=0.1, stochastic_depth=0.075),
    data=DataConfig(dataset="", randaugment_ops=2, randaugment_magnitude=1.0),
    train=TrainConfig(
        epochs=500, batch_size=4096, optimizer="adamw", learning_rate=0.004, base_batch_size=4096,
        lr_schedule="cosine", warmup_epochs=5.0, label_smoothing=0.1, log_steps=100, checkpoint_steps=5000,
        keep_checkpoints=5,
    ),
)

# mobilenet-train --preset=mobilenet_v4_conv_large_imagenet --dataset=tfrecord:/data/imagenet --batch_size=1024
# Conv-L at 384: 82.9 top-1 (the paper; Model Garden: "82.92% @ 500 epoches"). 500 epochs at batch
# 16384, lr 0.004 x batch/16384, 20 warm-up epochs, AdamW weight decay 0.2, dropout 0.2, stochastic
# depth 0.35 growing over the blocks (the paper's Table 10; the yaml has 0.2 for every block),
# BN momentum 0.997, RandAugment magnitude 15 (ours: 1.0), MixUp 0.8 / CutMix 1.0 (one of them,
# with equal odds: on every batch, where the paper mixes 30% of them).
MOBILENET_V4_CONV_LARGE_IMAGENET = Config(
    model=ModelConfig(name="mobilenet_v4_conv_large", alpha=1.0, image_size=(384, 384), dropout=0.2,
                      bn_momentum=0.997, bn_epsilon=1e-3, weight_decay=0.2, stochastic_depth=0.35),
    data=DataConfig(dataset="", randaugment_ops=2, randaugment_magnitude=1.0, mixup_alpha=0.8, cutmix_alpha=1.0),
    train=TrainConfig(
        epochs=500, batch_size=16384, optimizer="adamw", learning_rate=0.004, base_batch_size=16384,
        lr_schedule="cosine", warmup_epochs=20.0, label_smoothing=0.1, log_steps=100, checkpoint_steps=5000,
        keep_checkpoints=5,
    ),
)

PRESETS: dict[str, Config] = {
    "digits": DIGITS,
    "mobilenet_v1_imagenet": MOBILENET_V1_IMAGENET,
    "mobilenet_v2_imagenet": MOBILENET_V2_IMAGENET,
    "finetune": FINETUNE,
    "mobilenet_v2_qat_imagenet": MOBILENET_V2_QAT_IMAGENET,
    "mobilenet_v2_quant_imagenet": MOBILENET_V2_QUANT_IMAGENET,
    "mobilenet_v3_large_imagenet": MOBILENET_V3_LARGE_IMAGENET,
    "mobilenet_v3_small_imagenet": MOBILENET_V3_SMALL_IMAGENET,
    "mobilenet_v3_finetune": MOBILENET_V3_FINETUNE,
    "mobilenet_v4_conv_small_imagenet": MOBILENET_V4_CONV_SMALL_IMAGENET,
    "mobilenet_v4_conv_medium_imagenet": MOBILENET_V4_CONV_MEDIUM_IMAGENET,
    "mobilenet_v4_conv_large_imagenet": MOBILENET_V4_CONV_LARGE_IMAGENET,
}
