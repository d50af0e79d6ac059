"""Optional augmentations from Keras 3's core layers (RandAugment, MixUp, CutMix), made replayable.

Keras' random layers draw their seeds from a `SeedGenerator`, a variable advanced on every call: in
tf.data its value depends on how many calls came before (and on thread timing), so a resumed run
would not see the augmentations of the uninterrupted one. Each call here instead hands the layer
(and its sub-layers) a generator whose n-th draw is fold_in(seed, n), with `seed` derived from
(run seed, epoch, example index) like the crop's. The augmenting itself is the layers' own code.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf


class _StatelessSeeds(keras.random.SeedGenerator):
    """A SeedGenerator without state: the n-th `next()` is fold_in(seed, n) (n counted while tracing)."""

    def __init__(self, seed: tf.Tensor):  # no super().__init__(): nothing to store in a variable
        self._seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


def _call_seeded(layer: keras.layers.Layer, inputs, seed: tf.Tensor):
    """`layer(inputs, training=True)` with every random draw of it and its sub-layers taken from `seed`."""
    seeds = _StatelessSeeds(seed)
    layers = [layer] + [sub for sub in layer._flatten_layers(include_self=False) if hasattr(sub, "generator")]
    saved = [sub.generator for sub in layers]
    try:
        for sub in layers:
            object.__setattr__(sub, "generator", seeds)  # not Layer.__setattr__: no tracking of a stand-in
        return layer(inputs, training=True)
    finally:
        for sub, generator in zip(layers, saved):
            object.__setattr__(sub, "generator", generator)


@functools.lru_cache(maxsize=None)
def _layer(kind: str, *args):
    with tf.init_scope():  # build the layer (and its seed variables) eagerly, even when first asked while tracing
        if kind == "randaugment":
            num_ops, magnitude = args
            return keras.layers.RandAugment(value_range=(0, 255), num_ops=num_ops, factor=magnitude, dtype="float32")
        if kind == "mixup":
            return keras.layers.MixUp(alpha=args[0], dtype="float32")
        return keras.layers.CutMix(factor=args[0], dtype="float32")


def randaugment(image: tf.Tensor, seed: tf.Tensor, num_ops: int, magnitude: float) -> tf.Tensor:
    """RandAugment of one float32 [H, W, 3] image in 0..255: `num_ops` random ops at `magnitude` (0..1)."""
    out = _call_seeded(_layer("randaugment", num_ops, float(magnitude)), image, seed)
    return tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)


def mix_batch(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, num_classes: int, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp or CutMix of a batch: (images, soft labels float32 [batch, num_classes]).

    `mixup_alpha` is MixUp's Beta(alpha, alpha); `cutmix_alpha` is Keras CutMix's `factor` (it draws
    its Beta alpha from [0, factor]). With both > 0 each batch gets one of the two, with equal odds.
    """
    data = {"images": images, "labels": tf.one_hot(labels, num_classes, dtype=tf.float32)}
    choose_seed, mix_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))

    def mixup():
        out = _call_seeded(_layer("mixup", float(mixup_alpha)), data, mix_seed)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], tf.float32)

    def cutmix():
        out = _call_seeded(_layer("cutmix", float(cutmix_alpha)), data, mix_seed)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], tf.float32)

    if mixup_alpha and cutmix_alpha:
        return tf.cond(tf.random.stateless_uniform([], choose_seed) < 0.5, mixup, cutmix)
    return mixup() if mixup_alpha else cutmix()
