"""Knowledge distillation (Hinton et al. 2015): a student trained on a teacher's softened predictions.

The student's per-example loss is

    (1 - w) * cross-entropy(labels, student)  +  w * T^2 * KL(teacher_T || student_T)

with the labels as the run has them (label smoothing, MixUp/CutMix's soft labels), `w` the
distillation weight, `T` the temperature and `p_T = softmax(logits / T)`. The teacher, a run of
ours of any model, width and input size (its moving-average weights when it kept them), sees the
student's augmented batch, resized to its own input size, in inference mode. T^2 keeps the
gradients of the soft term at the scale of the hard one as T changes (Hinton et al., section 2).

Both models end in a softmax: `log p` is the logits up to a per-example constant, which the
tempered softmax cancels, so `softmax(log p / T)` is exactly `softmax(logits / T)` while no
probability underflows (logit gaps under ~87 in float32).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from mobilenet_tf.errors import UserError

# The smallest normal float32 is 1.2e-38: below this a probability has underflowed.
_TINY = 1e-37


def tempered_log_softmax(probabilities: tf.Tensor, temperature: float) -> tf.Tensor:
    """log softmax(logits / T) of a softmax's output."""
    return tf.nn.log_softmax(tf.math.log(tf.maximum(probabilities, _TINY)) / temperature, axis=-1)


def soft_term(student: tf.Tensor, teacher: tf.Tensor, temperature: float) -> tf.Tensor:
    """Per example T^2 * KL(teacher_T || student_T), both given as probabilities [batch, classes]."""
    log_student = tempered_log_softmax(student, temperature)
    log_teacher = tempered_log_softmax(teacher, temperature)
    kl = tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    return temperature**2 * kl


def losses(soft_labels, student, teacher, *, weight: float, temperature: float, label_smoothing: float):
    """(the per-example loss, its cross-entropy term, its distillation term), each [batch]; without
    a teacher (`teacher` None) the loss is the cross-entropy and the distillation term 0."""
    hard = keras.losses.categorical_crossentropy(soft_labels, student, label_smoothing=label_smoothing)
    if teacher is None:
        return hard, hard, tf.zeros_like(hard)
    soft = soft_term(student, tf.cast(teacher, student.dtype), temperature)
    return (1.0 - weight) * hard + weight * soft, hard, soft


class TeacherError(UserError, ValueError):
    """A --teacher that cannot teach this student; the message says why."""


def check_teacher(run_dir: str, student, dataset: str) -> None:
    """The teacher's classes must be the student's (`student`: the ModelConfig, classes resolved)."""
    from mobilenet_tf import config

    theirs = config.load(run_dir).model
    if theirs.num_classes != student.num_classes or (theirs.class_names and theirs.class_names != student.class_names):
        raise TeacherError(f"--teacher={run_dir}: a model of {theirs.num_classes} classes "
                           f"({', '.join(theirs.class_names[:3])}, ...), but {dataset} has {student.num_classes} "
                           f"({', '.join(student.class_names[:3])}, ...): a teacher must know the student's classes, "
                           f"in the same order")


def load_teacher(run_dir: str) -> keras.Model:
    """The teacher: the run's model with its newest readable checkpoint (its moving-average weights
    when it kept them), read-only (an unreadable newer checkpoint is skipped, not set aside). A
    teacher trained with label smoothing is taken with a warning: smoothing gives every wrong class
    the same small share, and those shares are what distillation transfers (docs/training.md)."""
    from mobilenet_tf.checkpoint import restore_model

    model, saved = restore_model(run_dir, set_aside=False)
    if saved.train.label_smoothing:
        logging.warning("--teacher=%s was trained with label smoothing %g, which erases most of what it would "
                        "teach: a teacher trained with --label_smoothing=0 teaches better (docs/training.md)",
                        run_dir, saved.train.label_smoothing)
    model.trainable = False
    return model


def teacher_inputs(images: tf.Tensor, teacher: keras.Model) -> tf.Tensor:
    """The student's batch at the teacher's input size (bilinear), as the teacher takes it."""
    size = tuple(teacher.input_shape[1:3])
    if tuple(images.shape[1:3]) == size:
        return images
    return tf.cast(tf.image.resize(images, size, method="bilinear"), images.dtype)
