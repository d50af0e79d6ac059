"""timm itself, as the peer our loading of its checkpoints is checked against: a timm model with random
weights that make the comparison bite, saved in the Hugging Face Hub's layout, and timm's own
forward pass. Imports PyTorch and timm (the `timm` extra); the package never does."""

import numpy as np
import torch
import timm
from timm.models._hub import save_for_hf


def random_checkpoint(architecture, directory, image_size=64, seed=0):
    """timm's `architecture` with random weights, saved to `directory` as `save_for_hf` writes a Hub
    checkpoint (config.json, model.safetensors); the model, in eval mode.

    timm's initialization leaves batch norm at identity statistics, layer scale at 1e-5 (whole
    branches, and the hybrids' non-residual blocks, scaled away) and a classifier whose
    probabilities are all ~1/1000: any two networks would agree on them. Here batch norm's scale
    and shift are random and its statistics those of its input on random images, layer scales are
    0.2-0.5, the attention's queries small enough to keep softmax soft, and the classifier strong
    enough to spread the probabilities.
    """
    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False)
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.8, 1.2, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # a cumulative average: after one batch, that batch's statistics
            elif isinstance(getattr(module, "gamma", None), torch.nn.Parameter):  # LayerScale2d
                module.gamma.uniform_(0.2, 0.5, generator=generator)
            elif name.endswith("query.proj"):
                module.weight.mul_(0.1)
        model.train()
        # Images as the tests feed: uniform 0-255 pixels, normalized as the checkpoint says.
        cfg = model.pretrained_cfg
        images = ((torch.rand(16, 3, image_size, image_size, generator=generator)
                   - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1))
        model(images)
        for module in norms:
            module.momentum = 0.1
        model.eval()
        # Logits that differ by ~2 from image to image, however little the features do (random V3s
        # barely tell noise images apart), centred on these images.
        features = model.forward_head(model.forward_features(images), pre_logits=True)
        classifier = model.classifier
        scale = 2 / (classifier.in_features * features.var(dim=0).mean()) ** 0.5
        classifier.weight.normal_(0, float(scale), generator=generator)
        classifier.bias.copy_(-classifier.weight @ features.mean(dim=0))
    save_for_hf(model, directory, safe_serialization=True)
    return model


def probabilities(model, pixels):
    """timm's probabilities of RGB pixels 0-255 [n, H, W, 3], normalized as its pretrained config says."""
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = torch.from_numpy(np.asarray(pixels, np.float32)).permute(0, 3, 1, 2) / 255.0
    with torch.no_grad():
        return torch.softmax(model((x - mean) / std), dim=-1).numpy()


def trainable_parameters(model):
    return sum(p.numel() for p in model.parameters())
