"""RandAugment, MixUp and CutMix (Keras 3 layers): eager equals tf.data, seeded, replayed on resume."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mobilenet_tf.config import DIGITS, DataConfig
from mobilenet_tf.data import augment, pipeline, sources

IMAGE_SIZE = (32, 32)


def _image():
    y, x = np.mgrid[0:48, 0:48]
    return tf.constant(np.stack([x * 5 % 256, y * 5 % 256, (x + y) * 2 % 256], -1), tf.float32)


def test_randaugment_eager_equals_tf_data_and_follows_the_seed():
    image = _image()
    seeds = tf.constant([[4, i] for i in range(6)], tf.int64)
    eager = [augment.randaugment(image, s, 2, 0.5).numpy() for s in seeds]
    in_data = [x.numpy() for x in tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: augment.randaugment(image, s, 2, 0.5), num_parallel_calls=3)]
    for a, b in zip(eager, in_data):
        np.testing.assert_array_equal(a, b)
        assert a.shape == (48, 48, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 255
    assert len({a.tobytes() for a in eager}) == 6  # each seed its own augmentation
    np.testing.assert_array_equal(augment.randaugment(image, seeds[0], 2, 0.5), eager[0])


@pytest.mark.parametrize("mixup,cutmix", [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mix_batch_eager_equals_tf_data(mixup, cutmix):
    images = tf.random.stateless_uniform([8, 16, 16, 3], [1, 2], -1, 1)
    labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    seed = tf.constant([9, 9], tf.int64)
    x, y = augment.mix_batch(images, labels, seed, 4, mixup, cutmix)
    x2, y2 = next(iter(tf.data.Dataset.from_tensors((images, labels)).map(
        lambda a, b: augment.mix_batch(a, b, seed, 4, mixup, cutmix))))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (8, 16, 16, 3) and y.shape == (8, 4) and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, atol=1e-6)
    assert (y.numpy() < 1).any()  # labels really are mixed


def test_mixup_and_cutmix_do_what_they_say():
    images = tf.random.stateless_uniform([6, 16, 16, 3], [3, 4], -1, 1)
    labels = tf.range(6)
    seed = tf.constant([1, 5], tf.int64)
    x, y = augment.mix_batch(images, labels, seed, 6, 0.4, 0.0)
    for i in range(6):
        # MixUp: lambda * own image + (1 - lambda) * another, the label weights the same.
        weights = y.numpy()[i]
        expected = sum(w * images[j] for j, w in enumerate(weights) if w > 0)
        np.testing.assert_allclose(x[i], expected, atol=1e-5)
    images = tf.random.stateless_uniform([6, 64, 64, 3], [3, 4], -1, 1)
    x, y = augment.mix_batch(images, labels, seed, 6, 0.0, 1.0)
    for i in range(6):
        # CutMix: each pixel from the own image or one other; the label weights are the pixel shares
        # (Keras computes them from the box's real-valued corners: within a pixel per side).
        own = np.all(np.isclose(x[i], images[i]), axis=-1)
        assert own.all() or abs(y[i, i] - own.mean()) < 2 / 64


def test_training_batches_with_augmentations_replay_on_resume(tmp_path):
    info = sources.resolve(DataConfig(dataset="digits", cache_dir=str(tmp_path)))
    data = dataclasses.replace(DIGITS.data, randaugment_ops=1, mixup_alpha=0.2, cutmix_alpha=1.0)

    def batches(**kwargs):
        ds = pipeline.build_dataset(info, data, split="train", global_batch_size=64, image_size=IMAGE_SIZE,
                                    training=True, seed=3, **kwargs)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    full = batches(epochs=(0, 1))
    steps = 1437 // 64
    assert len(full) == steps and full[0][1].shape == (64, 10) and full[0][1].dtype == np.float32
    np.testing.assert_allclose(full[0][1].sum(axis=1), 1.0, atol=1e-5)
    assert all(-1 <= x.min() and x.max() <= 1 for x, _ in full)
    resumed = batches(epochs=(0, 1), skip_steps=steps - 3)
    assert len(resumed) == 3
    for a, b in zip(full[-3:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    plain = pipeline.build_dataset(info, DIGITS.data, split="train", global_batch_size=64, image_size=IMAGE_SIZE,
                                   training=True, seed=3)
    x, y = next(iter(plain))
    assert y.dtype == tf.int32 and y.shape == (64,)  # off by default: integer labels as before
