"""Learning-rate schedules and optimizers (Keras 3 core only)."""

from __future__ import annotations

import keras
from keras import ops

from mobilenet_tf.config import TrainConfig


@keras.saving.register_keras_serializable("mobilenet_tf")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `after(step - warmup_steps)`;
    from `drop_step` on (0: never) everything is multiplied by `drop_factor` (fine-tuning's
    lower rate once the backbone is unfrozen)."""

    def __init__(self, after, warmup_steps: int, peak: float, drop_step: int = 0, drop_factor: float = 1.0):
        self.after = after
        self.warmup_steps = warmup_steps
        self.peak = peak
        self.drop_step = drop_step
        self.drop_factor = drop_factor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = self.after(ops.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps:
            lr = ops.where(step < self.warmup_steps, self.peak * step / self.warmup_steps, lr)
        if self.drop_step:
            lr = ops.where(step < self.drop_step, lr, lr * self.drop_factor)
        return lr

    def get_config(self):
        return {
            "after": keras.saving.serialize_keras_object(self.after),
            "warmup_steps": self.warmup_steps,
            "peak": self.peak,
            "drop_step": self.drop_step,
            "drop_factor": self.drop_factor,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config, after=keras.saving.deserialize_keras_object(config["after"]))
        return cls(**config)


def peak_learning_rate(train: TrainConfig) -> float:
    """`learning_rate`, scaled linearly to the global batch when the recipe gives it per `base_batch_size`."""
    if train.base_batch_size:
        return train.learning_rate * train.batch_size / train.base_batch_size
    return train.learning_rate


def build_schedule(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The peak rate after `warmup_epochs`, then decayed per `lr_schedule`."""
    warmup_steps = int(round(train.warmup_epochs * steps_per_epoch))
    total_steps = max(train.epochs * steps_per_epoch - warmup_steps, 1)
    lr = peak_learning_rate(train)
    if train.lr_schedule == "exponential":
        # Staircase decay every `decay_epochs`, as the TF Model Garden MobileNet recipes.
        after = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=max(int(train.decay_epochs * steps_per_epoch), 1), decay_rate=train.decay_rate, staircase=True
        )
    elif train.lr_schedule == "cosine":
        after = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps)
    else:  # constant: a polynomial decay from lr to lr
        after = keras.optimizers.schedules.PolynomialDecay(lr, decay_steps=1, end_learning_rate=lr)
    drop_step = train.freeze_backbone_epochs * steps_per_epoch
    return Warmup(after, warmup_steps, lr, drop_step=drop_step, drop_factor=train.unfreeze_lr_factor)


def build_optimizer(train: TrainConfig, steps_per_epoch: int, weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """The optimizer `train.optimizer` names, on the schedule above.

    `weight_decay` is used only by AdamW (decoupled decay); the other optimizers get weight decay
    as an L2 penalty built into the model's kernels.
    """
    schedule = build_schedule(train, steps_per_epoch)
    # The optimizer keeps the moving average of the weights (checkpointed with its slots).
    ema = dict(use_ema=train.ema_decay > 0, ema_momentum=train.ema_decay or 0.99)
    if train.optimizer == "rmsprop":
        # TF Model Garden's MobileNet RMSProp; Keras adds epsilon inside the sqrt, as TF1's RMSProp did.
        optimizer = keras.optimizers.RMSprop(schedule, rho=0.9, momentum=0.9, epsilon=0.002, **ema)
    elif train.optimizer in ("sgd", "momentum"):
        # sgd: Nesterov momentum (timm's); momentum: classic heavy-ball (MindSpore's Momentum).
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=train.optimizer == "sgd", **ema)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=weight_decay, beta_1=train.adam_beta1,
                                           epsilon=train.adam_epsilon, **ema)
        # Decay kernels only: BN scales/offsets and biases are excluded, as in timm and big_vision.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    if train.precision == "mixed_float16":
        # float16 gradients underflow without it; bfloat16 has float32's range and needs none.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
