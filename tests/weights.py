"""Random weights that make model comparisons bite, and copying them by layer name."""

import math

import keras
import numpy as np

from mobilenet_tf.models import V4
from mobilenet_tf.models.mobilenet_v4 import LayerScale

V3 = ("mobilenet_v3_large", "mobilenet_v3_small")
# Kernel scale for `randomize`, per family. V3 and V4 have their batch norm statistics calibrated instead.
GAIN = {"mobilenet_v1": 1.0, "mobilenet_v2": 0.8, **{name: 1.0 for name in V3 + V4}}


def weight_layers(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


def copy_weights_by_name(source, target):
    """Copies every weight-bearing layer of `target` from its namesake in `source`."""
    source_layers = weight_layers(source)
    for name, layer in weight_layers(target).items():
        weights = source_layers[name].get_weights()
        assert [w.shape for w in layer.get_weights()] == [w.shape for w in weights], name
        layer.set_weights(weights)


def randomize(model, seed, gain, images=None):
    """Random weights that keep the signal alive to the last layer, so comparisons bite.

    The default Glorot init with identity BN statistics shrinks activations layer after layer
    until the last feature map no longer depends on the input (then any two bodies "agree").
    He-normal kernels times `gain` and random but near-identity BN statistics keep the output
    input-dependent and also exercise BN epsilon and ordering. V2's residual sums grow without
    a norm in between, so it needs a gain below 1 to stay out of the chaotic regime where
    float32 round-off alone moves the output.

    With `images`, every batch norm's moving statistics are then set to those of its input on
    them (one training-mode pass at momentum 0): V3's hard-swish and squeeze-excite gates kill or
    blow up the signal under any fixed gain, and a normalized input to every layer keeps it O(1).
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.8, 1.2, n), rng.normal(0, 0.1, n),
                rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n),
            ])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            shape = layer.kernel.shape
            kernel = gain * rng.normal(0, math.sqrt(2 / math.prod(shape[:-1])), shape)
            if layer.name.endswith("_query"):
                # Soft attention: random queries at full scale make every softmax nearly one-hot, and
                # then float rounding alone flips which position wins.
                kernel *= 0.1
            layer.set_weights([kernel] + [rng.normal(0, 0.1, w.shape) for w in layer.weights[1:]])
        elif isinstance(layer, LayerScale):
            # Not timm's 1e-5, which would scale whole branches (and non-residual blocks) away.
            layer.set_weights([rng.uniform(0.2, 0.5, layer.gamma.shape)])
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            shape = layer.kernel.shape
            layer.set_weights([gain * rng.normal(0, math.sqrt(2 / math.prod(shape[:2])), shape)])
    if images is not None:
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        momenta = [layer.momentum for layer in norms]
        for layer in norms:
            layer.momentum = 0.0
        model(images, training=True)
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def random_weights(model, name, seed):
    """`randomize` as each family needs it (V3 and V4: statistics calibrated on random images)."""
    images = None
    if name in V3 + V4:
        low = 0 if any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers) else -1
        images = np.random.default_rng(seed + 100).uniform(low, 255 if low == 0 else 1, (16, *model.input_shape[1:]))
    randomize(model, seed, GAIN[name], images=images)
    if "hybrid" in name and "predictions" in weight_layers(model):
        # The hybrids' pooled features reach ~100: a random classifier on them is one-hot for
        # every image.
        dense = model.get_layer("predictions")
        dense.kernel.assign(dense.kernel * 0.05)


def assert_input_dependent(y):
    """Guards against vacuous comparisons: the two images of the batch must differ."""
    y = np.asarray(y)
    assert np.abs(y[0] - y[1]).max() > 1e-3 * np.abs(y).max() > 0
