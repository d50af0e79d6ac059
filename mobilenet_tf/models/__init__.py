"""The MobileNet family: which models there are, their widths and the layers of their heads.

This module imports no TensorFlow, so the command line checks `--model` and `--alpha` before loading
it. The builders are in `models.build` (`build_model`, `build_from_config`, `count_macs`,
`copy_weights`), one module per architecture (`mobilenet_v1` ... `mobilenet_v4`, their spec tables
laid out by `stages`), the quantized twin in `quantize`, keras.applications' weight files in
`pretrained` and timm's checkpoints in `timm` (the architectures they hold in `timm_archs`).
"""

V4 = ("mobilenet_v4_conv_small", "mobilenet_v4_conv_medium", "mobilenet_v4_conv_large", "mobilenet_v4_hybrid_medium",
      "mobilenet_v4_hybrid_large")
MODEL_NAMES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", *V4)
# Widths keras.applications publishes ImageNet weights for (V3's minimalistic variant: 1.0 only).
# No Keras or TensorFlow weights of MobileNet V4 are published (Model Garden released none): V4
# starts from timm's checkpoints (--pretrained=timm/...), from scratch or from another run.
ALPHAS = {
    "mobilenet_v1": (0.25, 0.5, 0.75, 1.0),
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    "mobilenet_v3_large": (0.75, 1.0),
    "mobilenet_v3_small": (0.75, 1.0),
    **{name: () for name in V4},
}
MINIMALISTIC_ALPHAS = (1.0,)
# Widths the command line takes: V1 and V2 those keras.applications publishes; V3 and V4 any sensible one.
ALPHA_RANGES = {
    "mobilenet_v1": (0.25, 1.25),  # timm's mobilenetv1_125
    "mobilenet_v2": (0.35, 1.4),
    **{name: (0.25, 2.0) for name in ("mobilenet_v3_large", "mobilenet_v3_small", *V4)},
}
# The families with keras.applications' `minimalistic` variant.
MINIMALISTIC = ("mobilenet_v3_large", "mobilenet_v3_small")
# The families with stochastic depth (residual branches dropped while training).
STOCHASTIC_DEPTH = V4
# The input size each family was designed and trained at (the papers' and Model Garden's).
DEFAULT_IMAGE_SIZES = {"mobilenet_v4_conv_medium": 256, "mobilenet_v4_conv_large": 384,
                       "mobilenet_v4_hybrid_medium": 256, "mobilenet_v4_hybrid_large": 384}
# Whose details a model follows where the references differ (`ModelConfig.layout`): "keras"
# (keras.applications, TF Model Garden: TensorFlow's padding) or "timm" (symmetric padding, and
# timm's stem, head and depth rules; see each builder).
LAYOUTS = ("keras", "timm")
# Named variants of a family (`ModelConfig.variant`), both timm's: V1 with a 1x1 conv before the
# pooling (mobilenetv1_100h), V3-Large as Ross Wightman trained it (mobilenetv3_rw).
VARIANTS = {"mobilenet_v1": ("head",), "mobilenet_v3_large": ("rw",)}
# Five stride-2 stages take 32 pixels down to a 1x1 feature map.
MIN_IMAGE_SIZE = 32

# The classifier layers: re-initialized when the class count changes, trained while frozen.
HEAD_LAYERS = ("conv_preds", "predictions", "logits")
# The layers built only with the top (V3's and V4's conv after the pooling too): a model without it,
# or a `*_no_top*.h5` file of keras.applications, has none of them.
TOP_LAYERS = (*HEAD_LAYERS, "conv_2", "conv_2_bn")
