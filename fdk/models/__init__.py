"""The model zoo: one registry dict from upstream names to constructors `f(num_classes) -> nn.Module`.

Every model takes `forward(x, return_features=False)` and returns `(logits, penultimate_features)`
when asked, as the upstream zoo does (docs/method.md §10). `create_model(name, num_classes)` builds one;
`load_model(path)` builds one and loads weights into it (fdk/models/loading.py).
"""

from fdk.models.deeplab import imagenet_backbone_weights, load_backbone_weights
from fdk.models.loading import (
    EMBEDDED_SEG_TEACHER,
    EMBEDDED_TEACHER,
    guess_architecture,
    head_classes,
    load_model,
    load_weights,
)
from fdk.models.zoo import (
    CIFAR_MODELS,
    IMAGENET_MODELS,
    MODELS,
    SEGMENTATION_MODELS,
    check_architecture,
    create_model,
    with_random_bn_statistics,
)

__all__ = [
    "CIFAR_MODELS",
    "EMBEDDED_SEG_TEACHER",
    "EMBEDDED_TEACHER",
    "IMAGENET_MODELS",
    "MODELS",
    "SEGMENTATION_MODELS",
    "check_architecture",
    "create_model",
    "guess_architecture",
    "head_classes",
    "imagenet_backbone_weights",
    "load_backbone_weights",
    "load_model",
    "load_weights",
    "with_random_bn_statistics",
]
