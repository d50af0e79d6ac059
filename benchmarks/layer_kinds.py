"""The kinds of layer a MobileNet training step spends its time in, for setting a TensorFlow profile
(op types) beside a PyTorch one (aten ops) in train_throughput.py --profile. Pure Python: imported
by train_throughput.py (TensorFlow) and timm_train_step.py (PyTorch), which never share a process.

Each framework's time is the wall time of its ops on the thread that runs them, per step (TF: the
executor's threads, whose ops may overlap on two cores; PyTorch: self CPU time on the one thread
that dispatches, oneDNN's own threads inside it).
"""

KINDS = ("depthwise conv forward", "depthwise conv backward", "conv forward (1x1 and full)", "conv backward",
         "batch norm (forward and backward)", "activations (forward and backward)",
         "the rest (elementwise, SE, pooling, loss, optimizer, copies)")

_TF = {
    "DepthwiseConv2dNative": 0, "DepthwiseConv2dNativeBackpropInput": 1, "DepthwiseConv2dNativeBackpropFilter": 1,
    "Conv2D": 2, "_FusedConv2D": 2, "Conv2DBackpropInput": 3, "Conv2DBackpropFilter": 3,
    # The training step's 1x1 convolutions run as MatMul on a CPU (with them: the classifier's).
    "MatMul": 2, "MatMulGradient": 3,
    "FusedBatchNormV3": 4, "FusedBatchNormGradV3": 4, "_FusedBatchNormEx": 4,
    "Relu": 5, "Relu6": 5, "ReluGrad": 5, "Relu6Grad": 5, "Elu": 5, "Sigmoid": 5, "SigmoidGrad": 5,
    "Gelu": 5, "GeluGrad": 5,
    # mobilenet_tf's native training kernels (mobilenet_tf/kernels).
    "MobilenetDepthwiseGradInput": 1, "MobilenetDepthwiseGradFilter": 1,
    "MobilenetHardSwish": 5, "MobilenetHardSwishGrad": 5,
}

_TORCH_ACTIVATIONS = ("relu", "threshold_backward", "hardtanh", "hardswish", "hardsigmoid", "sigmoid", "gelu")


def tf_kind(op_type: str) -> str:
    """The kind of a TF op type, oneDNN's rewrites (`_MklNativeConv2D`, `_MklFusedBatchNormEx`) as
    the op they replace; "MatMulGradient" is a MatMul of the backward pass (`op_milliseconds`)."""
    for prefix in ("_MklNative", "_Mkl"):
        if op_type.startswith(prefix):
            op_type = op_type[len(prefix):]
            break
    return KINDS[_TF.get(op_type, _TF.get("_" + op_type, 6))]


def torch_kind(name: str, input_shapes) -> str:
    """The kind of an aten op, its weight's shape telling a depthwise convolution ([C, 1, k, k],
    C > 1: the second input of a forward convolution, the third of convolution_backward)."""
    if "convolution" in name or name in ("aten::_conv_depthwise2d", "aten::thnn_conv2d"):
        backward = "backward" in name
        weight = input_shapes[2 if backward else 1] if len(input_shapes) > (2 if backward else 1) else []
        depthwise = len(weight) == 4 and weight[1] == 1 and weight[0] > 1
        return KINDS[(0 if depthwise else 2) + (1 if backward else 0)]
    if "batch_norm" in name:
        return KINDS[4]
    if any(activation in name for activation in _TORCH_ACTIVATIONS):
        return KINDS[5]
    return KINDS[6]
