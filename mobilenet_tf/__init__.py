"""mobilenet_tf: train, fine-tune, quantize and ship MobileNet V1-V4 with TensorFlow and Keras 3.

The public Python surface is what `__all__` names; every other module may change. Importing the
package loads no TensorFlow (the command line answers before it loads): `create_model` and
`load_model` load it on first use.

    import mobilenet_tf
    model = mobilenet_tf.create_model("mobilenet_v4_conv_small", num_classes=10)
    model = mobilenet_tf.load_model("runs/photos")      # model.class_names

Once Keras is imported, the package's Keras layers are registered (as `mobilenet_tf>...`), so
`keras.saving.load_model` reads the `.keras` files of its models.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

from mobilenet_tf.errors import UserError
from mobilenet_tf.models import MODEL_NAMES

__all__ = ["create_model", "load_model", "MODEL_NAMES", "UserError"]


def __getattr__(name):
    if name in ("create_model", "load_model"):
        from mobilenet_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'mobilenet_tf' has no attribute {name!r}")


def _register_layers():
    import mobilenet_tf.models.build  # noqa: F401  (every builder's module, and so every layer of ours)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Registers the package's Keras layers right after `keras` is first imported (importing them
    imports Keras and TensorFlow, which `import mobilenet_tf` must not)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _register_layers()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKeras())
