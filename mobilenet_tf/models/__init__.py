"""The MobileNet family: which models there are, their widths and the layers of their heads.

This module imports no TensorFlow, so the command line checks `--model` and `--alpha` before loading
it. The builders are in `models.build` (`build_model`, `build_from_config`, `count_macs`,
`copy_weights`), one module per architecture (`mobilenet_v1`, `mobilenet_v2`, `mobilenet_v3`), the
quantized twin in `quantize` and keras.applications' weight files in `pretrained`.
"""

MODEL_NAMES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")
# Widths keras.applications publishes ImageNet weights for (V3's minimalistic variant: 1.0 only).
ALPHAS = {
    "mobilenet_v1": (0.25, 0.5, 0.75, 1.0),
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    "mobilenet_v3_large": (0.75, 1.0),
    "mobilenet_v3_small": (0.75, 1.0),
}
MINIMALISTIC_ALPHAS = (1.0,)
# Widths the command line takes: V1 and V2 those keras.applications publishes; V3 any sensible one.
ALPHA_RANGES = {name: (min(alphas), max(alphas)) for name, alphas in ALPHAS.items()}
ALPHA_RANGES.update({"mobilenet_v3_large": (0.25, 2.0), "mobilenet_v3_small": (0.25, 2.0)})
# The families with keras.applications' `minimalistic` variant.
MINIMALISTIC = ("mobilenet_v3_large", "mobilenet_v3_small")
# Five stride-2 stages take 32 pixels down to a 1x1 feature map.
MIN_IMAGE_SIZE = 32

# The classifier layers: re-initialized when the class count changes, trained while frozen.
HEAD_LAYERS = ("conv_preds", "predictions", "logits")
# The layers keras.applications builds only with the top: a `*_no_top*.h5` file has none of them.
TOP_LAYERS = (*HEAD_LAYERS, "conv_2")
