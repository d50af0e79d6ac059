"""absl flag definitions and flags -> Config. The only library module that reads `FLAGS`.

Every flag defaults to None, meaning "as the preset says"; a flag given on the command line
overrides that one field. Validation happens here, once: a bad value ends the program with one
line naming the flag and what to do, before any heavy work.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

from absl import flags

from mobilenet_tf import config, models, paths
from mobilenet_tf.data import specs
from mobilenet_tf.models import timm_archs
from mobilenet_tf.errors import UserError

FLAGS = flags.FLAGS


class FlagError(UserError, ValueError):
    """A flag value that cannot work; the message names the flag."""


def define_train_flags() -> None:
    flags.DEFINE_string("preset", "digits", f"Named recipe to start from: {', '.join(config.PRESETS)}.")
    flags.DEFINE_enum("model", None, models.MODEL_NAMES, "Architecture.")
    flags.DEFINE_float("alpha", None, "Width multiplier (V1: 0.25-1.0, V2: 0.35-1.4, V3 and V4: 0.25-2.0; ImageNet "
                       "weights for V1 0.25/0.5/0.75/1.0, V2 0.35/0.5/0.75/1.0/1.3/1.4, V3 0.75/1.0, V4 none).")
    flags.DEFINE_boolean("minimalistic", None, "V3: the minimalistic variant (3x3 kernels, ReLU, no squeeze-excite; "
                         "ImageNet weights at alpha 1.0).")
    flags.DEFINE_float("stochastic_depth", None, "V4: peak rate at which residual branches are dropped while training "
                       "(growing over the blocks; 0: off).")
    flags.DEFINE_string("image_size", None, "Input size: 224, or HEIGHTxWIDTH such as 192x256 (each >= 32).")
    flags.DEFINE_string("dataset", None, "digits (embedded default), tfrecord:DIR, folder:DIR or "
                        "tfds:NAME[:VERSION].")
    flags.DEFINE_string("cache_dir", None, "Where the digits are materialized (default $MOBILENET_TF_CACHE "
                        "or ~/.cache/mobilenet_tf).")
    flags.DEFINE_integer("label_offset", None, "tfrecord:DIR: subtracted from each label (1 for the TF/TPU "
                         "ImageNet converters' records); default from DIR/dataset_info.json.")
    flags.DEFINE_string("tfds_data_dir", None, "tfds:NAME: TFDS data directory (imagenet2012 wants its tars in "
                        "<dir>/downloads/manual).")
    flags.DEFINE_float("validation_fraction", None, "folder:DIR without train/ and val/: share of each class "
                       "held out.")
    flags.DEFINE_integer("randaugment", None, "RandAugment ops per image (0: off).")
    flags.DEFINE_float("randaugment_magnitude", None, "RandAugment magnitude, 0 to 1.")
    flags.DEFINE_float("mixup", None, "MixUp Beta alpha (0: off).")
    flags.DEFINE_float("cutmix", None, "CutMix factor: Keras draws its Beta alpha from [0, factor] (0: off).")
    flags.DEFINE_boolean("skip_bad_records", None, "Skip training records that cannot be read or decoded "
                         "(default: stop, naming the shard).")
    flags.DEFINE_integer("max_bad_records", None, "With --skip_bad_records: stop when an epoch skips more "
                         "(default 0.1% of an epoch).")
    flags.DEFINE_string("model_dir", None, "Checkpoints, logs and exports (default runs/<model>_<dataset>).")
    flags.DEFINE_integer("epochs", None, "Epochs to train.")
    flags.DEFINE_integer("batch_size", None, "Global batch size (all replicas together).")
    flags.DEFINE_integer("seed", None, "Seed of weight init, data order and augmentation.")
    flags.DEFINE_enum("strategy", None, config.STRATEGIES, "tf.distribute strategy.")
    flags.DEFINE_enum("optimizer", None, config.OPTIMIZERS, "Optimizer.")
    flags.DEFINE_float("adam_beta1", None, "adamw: beta_1 (Keras' 0.9 by default).")
    flags.DEFINE_float("adam_epsilon", None, "adamw: epsilon (Keras' 1e-7 by default).")
    flags.DEFINE_float("learning_rate", None, "Peak learning rate (after warm-up).")
    flags.DEFINE_enum("lr_schedule", None, config.SCHEDULES, "Decay after warm-up.")
    flags.DEFINE_float("warmup_epochs", None, "Linear warm-up length in epochs.")
    flags.DEFINE_float("label_smoothing", None, "Label smoothing.")
    flags.DEFINE_float("weight_decay", None, "L2 on kernels (decoupled decay with adamw).")
    flags.DEFINE_float("dropout", None, "Dropout before the classifier.")
    flags.DEFINE_integer("log_steps", None, "A log line every this many steps.")
    flags.DEFINE_integer("checkpoint_steps", None, "Also checkpoint every this many steps (0: epoch ends only).")
    flags.DEFINE_integer("keep_checkpoints", None, "Checkpoints kept.")
    flags.DEFINE_integer("num_classes", None, "Classifier size (default: the data set's).")
    flags.DEFINE_boolean("sync_bn", None, "Batch-norm statistics over the global batch (all replicas).")
    flags.DEFINE_integer("num_gpus", None, "GPUs to use (default all).")
    flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
    flags.DEFINE_enum("xla", None, ["auto", "true", "false"], "XLA-compile the step (auto: on GPU/TPU only).")
    flags.DEFINE_enum("precision", None, config.PRECISIONS,
                      "Compute precision (mixed_float16 uses loss scaling; mixed_bfloat16 on a CPU computes the "
                      "convolutions alone in bfloat16, 0.97-1.31x float32 there; float64 for numerical checks).")
    flags.DEFINE_float("decay_rate", None, "Exponential schedule: rate per --decay_epochs.")
    flags.DEFINE_float("decay_epochs", None, "Exponential schedule: epochs per (staircase) decay.")
    flags.DEFINE_float("ema_decay", None, "Moving average of the weights (0: off; evaluation and export use it).")
    flags.DEFINE_boolean("deterministic", None, "Op determinism: a rerun, or a resumed run, is bit-identical.")
    flags.DEFINE_string("pretrained", None, "Starting weights: a timm checkpoint, as a Hugging Face Hub id "
                        "(timm/mobilenetv4_conv_small.e2400_r224_in1k) or a folder holding its config.json and "
                        "model.safetensors, whose architecture, input size and normalization the model takes; or "
                        "imagenet (keras.applications' weight file) or the path of such a file.")
    flags.DEFINE_string("init_checkpoint", None, "Start from another run's checkpoint (a model_dir or ckpt path).")
    flags.DEFINE_integer("freeze_backbone_epochs", None, "Train only the head (BN frozen) for this many epochs.")
    flags.DEFINE_string("teacher", None, "Distill from this run of ours (a model_dir, any model, width and input "
                        "size; its moving-average weights when it kept them): its predictions enter the loss.")
    flags.DEFINE_float("distill_weight", None, "--teacher: the distillation term's share of the loss, 0 to 1 "
                       "(default 0.5).")
    flags.DEFINE_float("distill_temperature", None, "--teacher: the softmax temperature of both models' "
                       "predictions in that term (default 4).")
    flags.DEFINE_boolean("qat", None, "Quantization-aware training: train the fake-quantized twin of the model (from "
                         "--init_checkpoint, a float run), for an int8 TFLite export that needs no calibration.")
    flags.DEFINE_integer("qat_freeze_bn_steps", None, "--qat: batch norm uses its moving statistics from this step "
                         "on (0: never).")
    flags.DEFINE_integer("qat_freeze_range_steps", None, "--qat: activation ranges stop moving from this step on "
                         "(0: never).")
    flags.DEFINE_float("step_timeout", None, "Stop (exit status of a lost peer) when no step completes for this many "
                       "seconds: a stuck input or peer (default 0: max(600, 20 x the slowest step so far)).")
    # How the command reports, not what it trains (no Config field).
    flags.DEFINE_boolean("json", False, "The last line: the result as JSON (top1, top5, examples, step, export) "
                         "instead of a sentence.")
    flags.DEFINE_integer("exit_code_preempted", 75, "Exit status after a preemption (SIGTERM) was checkpointed; "
                         "Kubeflow's TFJob retries only 130, 137, 138 and 143.")
    flags.DEFINE_integer("exit_code_peer_lost", 69, "Exit status when a multi-worker run lost a worker or stopped "
                         "making progress: restart every worker.")


# flag name -> (config section, field)
_FIELDS = {
    "model": ("model", "name"),
    "alpha": ("model", "alpha"),
    "minimalistic": ("model", "minimalistic"),
    "stochastic_depth": ("model", "stochastic_depth"),
    "image_size": ("model", "image_size"),
    "dropout": ("model", "dropout"),
    "num_classes": ("model", "num_classes"),
    "sync_bn": ("model", "sync_bn"),
    "weight_decay": ("model", "weight_decay"),
    "dataset": ("data", "dataset"),
    "cache_dir": ("data", "cache_dir"),
    "label_offset": ("data", "label_offset"),
    "tfds_data_dir": ("data", "tfds_data_dir"),
    "validation_fraction": ("data", "validation_fraction"),
    "randaugment": ("data", "randaugment_ops"),
    "randaugment_magnitude": ("data", "randaugment_magnitude"),
    "mixup": ("data", "mixup_alpha"),
    "cutmix": ("data", "cutmix_alpha"),
    "skip_bad_records": ("data", "skip_bad_records"),
    "max_bad_records": ("data", "max_bad_records"),
    "qat": ("model", "qat"),
    "qat_freeze_bn_steps": ("model", "qat_freeze_bn_steps"),
    "qat_freeze_range_steps": ("model", "qat_freeze_range_steps"),
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
    if "learning_rate" in sections.get("train", {}):
        sections["train"]["base_batch_size"] = 0  # a rate given on the command line is absolute
    if sections.get("model", {}).get("qat") and not cfg.model.qat:
        cfg = config.qat_finetune(cfg)  # --qat on a float recipe: its fine-tuning variant
    cfg = config.replace(cfg, **sections)
    if cfg.train.pretrained and timm_archs.is_timm_source(cfg.train.pretrained):
        cfg = with_timm_checkpoint(cfg, timm_archs.resolve(cfg.train.pretrained), sections.get("model", {}))
    cfg = with_init_checkpoint_architecture(cfg)
    validate(cfg)
    return cfg


# What shapes a network beyond --model, --alpha and --minimalistic, which no flag sets: a run started
# from a timm checkpoint has them from there, and a run started from that run takes them over.
INHERITED_FIELDS = ("layout", "depth_multiplier", "variant", "bn_epsilon", "mean", "std")


def with_init_checkpoint_architecture(cfg: config.Config) -> config.Config:
    """`cfg` with `INHERITED_FIELDS` of its --init_checkpoint's run, when it has one."""
    path = cfg.train.init_checkpoint
    run_dir = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not path or not os.path.isfile(os.path.join(run_dir, config.CONFIG_FILE)):
        return cfg  # none, or not a run: check_init_checkpoint says so
    source = config.load(run_dir).model
    return config.replace(cfg, model={field: getattr(source, field) for field in INHERITED_FIELDS})


def with_timm_checkpoint(cfg: config.Config, checkpoint, given: dict) -> config.Config:
    """`cfg` with the architecture, normalization and (unless `--image_size` was `given`) input
    size of the timm `checkpoint`. A `--model`, `--alpha` or `--minimalistic` that contradicts it
    is refused: the weights fit one network."""
    arch = checkpoint.model
    for field, flag in (("name", "model"), ("alpha", "alpha"), ("minimalistic", "minimalistic")):
        if field in given and given[field] != arch.get(field, False):
            raise FlagError(f"--{flag}={given[field]}: --pretrained={checkpoint.source} is timm's "
                            f"{checkpoint.architecture}, a {config.ModelConfig(**arch).describe()}; drop --{flag} or "
                            f"give another checkpoint")
    fields = {key: value for key, value in arch.items() if key != "image_size" or "image_size" not in given}
    return config.replace(cfg, model={**fields, "minimalistic": arch.get("minimalistic", False)})


def validate(cfg: config.Config) -> None:
    """Raise FlagError naming the flag for any value that cannot work."""
    m, t = cfg.model, cfg.train
    lo, hi = models.ALPHA_RANGES[m.name]
    if not lo <= m.alpha <= hi:
        raise FlagError(f"--alpha={m.alpha}: {m.name} takes widths {lo} to {hi}")
    if m.stochastic_depth and m.name not in models.STOCHASTIC_DEPTH:
        raise FlagError(f"--stochastic_depth: {m.name} has no stochastic depth; {', '.join(models.STOCHASTIC_DEPTH)} "
                        f"do")
    if not 0 <= m.stochastic_depth < 1:
        raise FlagError(f"--stochastic_depth={m.stochastic_depth}: must be in [0, 1)")
    if m.minimalistic and m.name not in models.MINIMALISTIC:
        raise FlagError(f"--minimalistic: {m.name} has no minimalistic variant; {' and '.join(models.MINIMALISTIC)} "
                        f"do")
    if min(m.image_size) < models.MIN_IMAGE_SIZE:
        raise FlagError(f"--image_size={m.image_size[0]}x{m.image_size[1]}: each side must be at least "
                        f"{models.MIN_IMAGE_SIZE}")
    if not cfg.data.dataset:
        raise FlagError(f"--dataset: the {FLAGS.preset} preset needs a data set, e.g. --dataset=tfrecord:DIR "
                        f"(written by mobilenet-convert) or --dataset=folder:DIR")
    d = cfg.data
    if d.randaugment_ops < 0 or not 0 <= d.randaugment_magnitude <= 1 or d.mixup_alpha < 0 or d.cutmix_alpha < 0:
        raise FlagError(f"--randaugment={d.randaugment_ops} --randaugment_magnitude={d.randaugment_magnitude} "
                        f"--mixup={d.mixup_alpha} --cutmix={d.cutmix_alpha}: need ops >= 0, magnitude in [0, 1], "
                        f"alphas >= 0")
    if d.max_bad_records is not None and d.max_bad_records < 0:
        raise FlagError(f"--max_bad_records={d.max_bad_records}: must not be negative")
    problem = specs.check_spec(cfg.data.dataset, cfg.data)
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
    if m.num_classes is not None and m.num_classes < 2:
        raise FlagError(f"--num_classes={m.num_classes}: a classifier needs at least 2 classes")
    if not 0 <= t.adam_beta1 < 1 or t.adam_epsilon <= 0:
        raise FlagError(f"--adam_beta1={t.adam_beta1} --adam_epsilon={t.adam_epsilon}: need 0 <= beta1 < 1, epsilon > 0")
    if t.step_timeout < 0:
        raise FlagError(f"--step_timeout={t.step_timeout}: must not be negative (0: automatic)")
    for name in ("exit_code_preempted", "exit_code_peer_lost"):
        if name in FLAGS and not 1 <= FLAGS[name].value <= 255:
            raise FlagError(f"--{name}={FLAGS[name].value}: an exit status is 1 to 255")
    if not 0 <= t.ema_decay < 1:
        raise FlagError(f"--ema_decay={t.ema_decay}: must be in [0, 1) (0 turns it off)")
    if not 0 < t.decay_rate <= 1 or t.decay_epochs <= 0:
        raise FlagError(f"--decay_rate={t.decay_rate} --decay_epochs={t.decay_epochs}: need 0 < rate <= 1, epochs > 0")
    if t.warmup_epochs < 0 or t.warmup_epochs > t.epochs:
        raise FlagError(f"--warmup_epochs={t.warmup_epochs}: must be between 0 and --epochs={t.epochs}")
    if t.pretrained and not timm_archs.is_timm_source(t.pretrained):
        if t.pretrained != "imagenet" and not os.path.isfile(t.pretrained):
            raise FlagError(f"--pretrained={t.pretrained}: no such file; give a timm checkpoint (timm/<name> or a "
                            f"folder), 'imagenet' or a keras.applications weight file (.h5)")
        if not models.ALPHAS[m.name]:
            raise FlagError(f"--pretrained={t.pretrained}: keras.applications has no {m.name}; start from timm's "
                            f"weights (e.g. --pretrained=timm/mobilenetv4_conv_small.e2400_r224_in1k, docs/weights.md), "
                            f"from scratch, or from another run with --init_checkpoint=RUN_DIR")
        alphas = models.MINIMALISTIC_ALPHAS if m.minimalistic else models.ALPHAS[m.name]
        if m.alpha not in alphas:
            raise FlagError(f"--pretrained: keras.applications has no ImageNet weights for {m.describe()}; "
                            f"use one of {', '.join(map(str, alphas))}")
    if t.init_checkpoint:
        check_init_checkpoint(cfg)
    if t.teacher:
        check_teacher(cfg)
    if m.qat:
        if t.precision != "float32":
            raise FlagError(f"--qat with --precision={t.precision}: quantization-aware training runs in float32 (the "
                            f"fake-quant ops have float32 kernels only)")
        if m.sync_bn:
            raise FlagError("--qat with --sync_bn: the folded batch norm of --qat uses each replica's batch; drop "
                            "--sync_bn")
        if not t.init_checkpoint and not t.pretrained:
            raise FlagError("--qat: give --init_checkpoint=RUN_DIR (a float run of this model) or --pretrained: "
                            "quantization-aware training fine-tunes a trained model")
        for name in ("qat_freeze_bn_steps", "qat_freeze_range_steps"):
            if getattr(m, name) < 0:
                raise FlagError(f"--{name}={getattr(m, name)}: must not be negative (0: never)")
    if not 0 <= t.freeze_backbone_epochs <= t.epochs:
        raise FlagError(f"--freeze_backbone_epochs={t.freeze_backbone_epochs}: must be between 0 and --epochs={t.epochs}")


def check_teacher(cfg: config.Config) -> None:
    """--teacher must be a run of mobilenet-train (its config.json and a checkpoint); the weight and
    temperature must make sense. (Its classes are checked against the data set's when training
    starts: counting those may need TensorFlow.)"""
    t = cfg.train
    if not paths.checkpoint_exists(t.teacher) or not os.path.isfile(os.path.join(t.teacher, config.CONFIG_FILE)):
        raise FlagError(f"--teacher={t.teacher}: no run there; give the model_dir of a mobilenet-train run (its "
                        f"{config.CONFIG_FILE} and checkpoints)")
    if not 0 <= t.distill_weight <= 1:
        raise FlagError(f"--distill_weight={t.distill_weight}: must be in [0, 1]")
    if t.distill_temperature <= 0:
        raise FlagError(f"--distill_temperature={t.distill_temperature}: must be positive")


def check_init_checkpoint(cfg: config.Config) -> None:
    """--init_checkpoint must hold a run of the same architecture and width (its config.json)."""
    path = cfg.train.init_checkpoint
    if not paths.checkpoint_exists(path):
        raise FlagError(f"--init_checkpoint={path}: no checkpoint there; give a model_dir or a ckpt-N path")
    run_dir = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not os.path.isfile(os.path.join(run_dir, config.CONFIG_FILE)):
        raise FlagError(f"--init_checkpoint={path}: no {config.CONFIG_FILE} beside it (a run of mobilenet-train)")
    source = config.load(run_dir).model
    if (source.name, source.alpha, source.minimalistic) != (cfg.model.name, cfg.model.alpha, cfg.model.minimalistic):
        raise FlagError(f"--init_checkpoint={path}: a run of {source.describe()}, but this command trains "
                        f"{cfg.model.describe()}; give --model={source.name} --alpha={source.alpha}"
                        f"{' --minimalistic' if source.minimalistic else ''} or another checkpoint")



def check_replicas(cfg: config.Config, num_replicas: int) -> None:
    """The global batch must split evenly over the replicas."""
    if cfg.train.batch_size % num_replicas:
        raise FlagError(f"--batch_size={cfg.train.batch_size}: not divisible by the {num_replicas} replicas of "
                        f"--strategy={cfg.train.strategy}; use a multiple of {num_replicas}")


# --- mobilenet-export, mobilenet-eval, mobilenet-predict ------------------------------------------


def define_export_flags() -> None:
    flags.DEFINE_string("model_dir", None, "Training run to export: its config.json and newest checkpoint (with "
                        "--pretrained: the new run to write).")
    flags.DEFINE_string("pretrained", None, "Export a timm checkpoint as it is, without training (a Hub id such as "
                        "timm/mobilenetv4_conv_small.e2400_r224_in1k, or a folder with its config.json and "
                        "model.safetensors): --model_dir becomes a run of it, with ImageNet's class names.")
    flags.DEFINE_string("dataset", None, "Images that calibrate --tflite=int8 (default: the run's data set; a "
                        "--pretrained run has none).")
    flags.DEFINE_string("checkpoint", None, "A checkpoint (.../ckpt-N) to export instead of the newest; its run's "
                        "config.json is in the same directory.")
    flags.DEFINE_string("export_dir", None, "TF Serving model base path (default <model_dir>/export).")
    flags.DEFINE_integer("version", None, "SavedModel version (default: one more than the largest in --export_dir).")
    flags.DEFINE_list("tflite", [], "TFLite models to write to <export_dir>/tflite/: any of "
                      "float32,float16,dynamic,int8.")
    flags.DEFINE_integer("representative_examples", None, "Training images calibrating int8 (default 200).")
    flags.DEFINE_boolean("onnx", False, "Also write <export_dir>/onnx/model.onnx (needs pip install -e .[onnx]).")
    flags.DEFINE_integer("onnx_opset", 17, "ONNX opset (tf2onnx 1.17.0 converts 13 to 18).")
    flags.DEFINE_boolean("onnx_nchw", False, "ONNX input [batch, 3, H, W] (TensorRT, OpenCV) instead of NHWC.")
    flags.DEFINE_boolean("keras", False, "Also write <export_dir>/keras/model.keras, the 0-255 Keras model "
                         "(keras.saving.load_model after import mobilenet_tf, or mobilenet_tf.load_model).")
    flags.DEFINE_boolean("web", False, "Also write <export_dir>/web/, a static page that classifies in the visitor's "
                         "browser (LiteRT.js, WebAssembly; no server code, no network), with the TFLite model of "
                         "--web_model.")
    flags.DEFINE_enum("web_model", "int8", ["int8", "float32"], "The TFLite model the --web page runs.")
    flags.DEFINE_float("max_megapixels", None, "Serving refuses images with more pixels, before decoding them "
                       "(default 50).")
    flags.DEFINE_boolean("ema", True, "Use the moving average of the weights when the run kept one.")
    flags.DEFINE_string("cache_dir", None, "Where the digits are materialized (default: the run's).")
    flags.DEFINE_boolean("json", False, "The last line: the files written as JSON ({\"saved_model\": path, "
                         "\"tflite\": {mode: path}, \"onnx\": path}) instead of a sentence.")


def define_eval_flags() -> None:
    flags.DEFINE_string("model_dir", None, "A training run: its newest checkpoint.")
    flags.DEFINE_string("saved_model", None, "A SavedModel directory (<export_dir>/<version>).")
    flags.DEFINE_string("tflite", None, "A .tflite model written by mobilenet-export.")
    flags.DEFINE_string("onnx", None, "A .onnx model written by mobilenet-export --onnx.")
    flags.DEFINE_string("report_dir", None, "Also write the evaluation report there: confusion matrix (PNG, CSV), "
                        "per-class precision/recall/F1, predictions and the worst-misclassified images.")
    flags.DEFINE_list("onnx_providers", [], "ONNX Runtime execution providers, in order of preference (default CPU).")
    flags.DEFINE_string("dataset", None, "Data set whose validation split is scored (default: the run's with "
                        "--model_dir, else digits).")
    flags.DEFINE_string("cache_dir", None, "Where the digits are materialized (default $MOBILENET_TF_CACHE "
                        "or ~/.cache/mobilenet_tf).")
    flags.DEFINE_integer("batch_size", None, "Images per batch (default: the run's, else 64).")
    flags.DEFINE_boolean("ema", True, "Use the moving average of the weights when the run kept one.")


def _define_model_flags() -> None:
    """--model and --ema: the model mobilenet-predict and mobilenet-demo load (see `check_model`)."""
    flags.DEFINE_string("model", None, "A SavedModel directory (or model base path: its newest version), a .tflite "
                        "or .onnx file, or a training run's model_dir.")
    flags.DEFINE_boolean("ema", True, "With a model_dir: the moving average of the weights when the run kept one.")


def define_predict_flags() -> None:
    _define_model_flags()
    flags.DEFINE_list("onnx_providers", [], "ONNX Runtime execution providers, in order of preference (default CPU).")
    flags.DEFINE_integer("top_k", 5, "Classes shown per image.")
    flags.DEFINE_boolean("json", False, "One JSON object per file on stdout instead of the table.")


def define_demo_flags() -> None:
    _define_model_flags()
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    flags.DEFINE_integer("port", 7860, "Port to listen on.")
    flags.DEFINE_boolean("share", False, "Also publish through a Gradio share link (needs the internet).")
    flags.DEFINE_integer("top_k", 3, "Classes shown per image.")
    flags.DEFINE_float("max_upload_mb", 20, "Uploads over this size are refused.")
    flags.DEFINE_integer("max_batch_size", 16, "Requests answered by one model call at most.")
    flags.DEFINE_string("report_dir", None, "Pictures of mobilenet-eval --report_dir to show (default: <run>/report).")


def export_job_from_flags() -> tuple[str, str | None, config.Config, int | None]:
    """(model_dir, checkpoint path or None, the run's Config with the export flags applied, version).

    With --pretrained the run does not exist yet: its Config is the checkpoint's (see
    `pretrained_run_config`), and `checkpoint.write_pretrained_run` writes it before exporting.
    """
    if bool(FLAGS.model_dir) == bool(FLAGS.checkpoint):
        raise FlagError("--model_dir or --checkpoint: give exactly one (the run, or one checkpoint of it)")
    if FLAGS.pretrained:
        if FLAGS.checkpoint:
            raise FlagError("--pretrained with --checkpoint: give --model_dir, the new run to write")
        model_dir = FLAGS.model_dir
        if paths.checkpoint_exists(model_dir):
            raise FlagError(f"--model_dir={model_dir} holds a run already; give a new directory for "
                            f"--pretrained={FLAGS.pretrained}")
        cfg = pretrained_run_config(FLAGS.pretrained, model_dir)
    elif FLAGS.checkpoint:
        if not os.path.isfile(f"{FLAGS.checkpoint}.index"):
            raise FlagError(f"--checkpoint={FLAGS.checkpoint}: no checkpoint there; give a .../ckpt-N path")
        model_dir = os.path.dirname(FLAGS.checkpoint) or "."
    else:
        model_dir = FLAGS.model_dir
        if not paths.checkpoint_exists(model_dir):
            raise FlagError(f"--model_dir={model_dir}: no checkpoint there; train with mobilenet-train first")
    if not FLAGS.pretrained:
        if not os.path.isfile(os.path.join(model_dir, config.CONFIG_FILE)):
            raise FlagError(f"--model_dir={model_dir}: no {config.CONFIG_FILE} (written by mobilenet-train)")
        cfg = config.load(model_dir)
    modes = tuple(dict.fromkeys(mode.strip() for mode in FLAGS.tflite if mode.strip()))
    if FLAGS.web and FLAGS.web_model not in modes:  # the page's model is written in tflite/ too
        modes += (FLAGS.web_model,)
    unknown = [mode for mode in modes if mode not in config.TFLITE_MODES]
    if unknown:
        raise FlagError(f"--tflite={','.join(FLAGS.tflite)}: unknown {', '.join(unknown)}; use any of "
                        f"{','.join(config.TFLITE_MODES)}")
    fields = {"export_dir": FLAGS.export_dir or os.path.join(model_dir, "export"), "tflite": modes,
              "onnx": FLAGS.onnx, "onnx_opset": FLAGS.onnx_opset, "onnx_nchw": FLAGS.onnx_nchw, "keras": FLAGS.keras,
              "web": FLAGS.web_model if FLAGS.web else ""}
    if FLAGS.onnx or FLAGS["onnx_opset"].present or FLAGS.onnx_nchw:
        check_onnx(FLAGS.onnx_opset)
    if FLAGS.representative_examples is not None:
        if FLAGS.representative_examples < 1:
            raise FlagError(f"--representative_examples={FLAGS.representative_examples}: must be at least 1")
        fields["representative_examples"] = FLAGS.representative_examples
    if FLAGS.max_megapixels is not None:
        if FLAGS.max_megapixels <= 0:
            raise FlagError(f"--max_megapixels={FLAGS.max_megapixels}: must be positive")
        fields["max_pixels"] = int(FLAGS.max_megapixels * 1e6)
    cfg = config.replace(cfg, export=fields, data={"cache_dir": FLAGS.cache_dir or cfg.data.cache_dir,
                                                   "dataset": FLAGS.dataset or cfg.data.dataset})
    if FLAGS.version is not None:
        if FLAGS.version < 1:
            raise FlagError(f"--version={FLAGS.version}: versions are positive integers")
        export_dir = fields["export_dir"]
        if os.path.exists(os.path.join(export_dir, str(FLAGS.version))):
            raise FlagError(f"--version={FLAGS.version}: {export_dir}/{FLAGS.version} exists and is never overwritten; "
                            f"omit --version for the next one ({paths.next_version(export_dir)})")
    if config.calibrates(cfg):
        if not cfg.data.dataset:
            raise FlagError("--tflite=int8 calibrates on images and this run has no data set: give "
                            "--dataset=folder:DIR or tfrecord:DIR (a few hundred images like those it will see)")
        problem = specs.check_spec(cfg.data.dataset, cfg.data)
        if problem:
            raise FlagError(f"--tflite=int8 calibrates on the data set {cfg.data.dataset}: {problem}")
    return model_dir, FLAGS.checkpoint, cfg, FLAGS.version


def pretrained_run_config(source: str, model_dir: str) -> config.Config:
    """The Config of a run that is timm checkpoint `source` as it is: its network, input size,
    normalization, classes and evaluation transform; no data set."""
    checkpoint = timm_archs.resolve(source)
    return config.Config(
        model=config.ModelConfig(**checkpoint.model, num_classes=checkpoint.num_classes,
                                 class_names=checkpoint.class_names),
        data=config.DataConfig(dataset="", eval_crop_fraction=checkpoint.eval_crop_fraction,
                               eval_transform=checkpoint.eval_transform),
        train=config.TrainConfig(model_dir=model_dir, pretrained=source),
    )


def check_onnx(opset: int) -> None:
    """--onnx needs tf2onnx (the onnx extra) and an opset it converts to. Only tf2onnx's presence is
    checked here (importing it loads TensorFlow); the export imports it before writing anything."""
    if opset not in config.ONNX_OPSETS:
        raise FlagError(f"--onnx_opset={opset}: tf2onnx 1.17.0 converts opsets {config.ONNX_OPSETS.start} to "
                        f"{config.ONNX_OPSETS.stop - 1}; use {config.ExportConfig.onnx_opset}")
    if importlib.util.find_spec("tf2onnx") is None:
        raise FlagError(f"--onnx needs tf2onnx, which is not installed; {config.ONNX_INSTALL}")


def check_providers(providers) -> None:
    """--onnx_providers must name providers this ONNX Runtime has."""
    if not providers:
        return
    try:
        import onnxruntime
    except ImportError:
        raise FlagError(f"--onnx_providers needs onnxruntime; {config.ONNX_INSTALL}") from None
    unknown = [p for p in providers if p not in onnxruntime.get_available_providers()]
    if unknown:
        raise FlagError(f"--onnx_providers={','.join(providers)}: this ONNX Runtime has no {', '.join(unknown)}; "
                        f"it has {', '.join(onnxruntime.get_available_providers())}")


def eval_job_from_flags() -> tuple[str, str, config.DataConfig]:
    """(kind: checkpoint | saved_model | tflite | onnx, its path, the data set to score on)."""
    given = [(kind, path) for kind, path in
             (("checkpoint", FLAGS.model_dir), ("saved_model", FLAGS.saved_model), ("tflite", FLAGS.tflite),
              ("onnx", FLAGS.onnx)) if path]
    if len(given) != 1:
        raise FlagError("--model_dir, --saved_model, --tflite or --onnx: give exactly one model to evaluate")
    kind, path = given[0]
    check_providers(FLAGS.onnx_providers)
    problems = {
        "checkpoint": not paths.checkpoint_exists(path) or not os.path.isfile(os.path.join(path, config.CONFIG_FILE)),
        "saved_model": not os.path.isfile(os.path.join(path, "saved_model.pb")),
        "tflite": not os.path.isfile(path),
        "onnx": not os.path.isfile(path),
    }
    if problems[kind]:
        flag = {"checkpoint": "model_dir"}.get(kind, kind)
        raise FlagError(f"--{flag}={path}: no {kind.replace('_', ' ')} there")
    data = config.load(path).data if kind == "checkpoint" else config.DataConfig()
    data = dataclasses.replace(data, dataset=FLAGS.dataset or data.dataset or "digits",
                               cache_dir=FLAGS.cache_dir or data.cache_dir)
    problem = specs.check_spec(data.dataset, data)
    if problem:
        raise FlagError(f"--dataset={data.dataset}: {problem}")
    if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
        raise FlagError(f"--batch_size={FLAGS.batch_size}: must be at least 1")
    return kind, path, data


def check_model(path: str | None) -> None:
    """--model of mobilenet-predict and mobilenet-demo: a form `predict.load` takes."""
    if not path:
        raise FlagError("--model: give a SavedModel directory, a .tflite or .onnx file or a training run's model_dir")
    if paths.kind_of(path) is None:
        raise FlagError(f"--model={path}: not a SavedModel directory, a .tflite or .onnx file or a model_dir")


def predict_job_from_flags(files: list[str]) -> str:
    """The validated --model path (the files are checked one by one while predicting)."""
    check_model(FLAGS.model)
    check_providers(FLAGS.onnx_providers)
    if FLAGS.top_k < 1:
        raise FlagError(f"--top_k={FLAGS.top_k}: must be at least 1")
    if not files:
        raise FlagError("no image files given: mobilenet-predict --model=PATH FILE...")
    return FLAGS.model
