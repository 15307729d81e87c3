"""The zoo's registry: upstream names -> constructors `f(num_classes) -> nn.Module` (docs/method.md §10)."""

from fdk.models.cifar_resnet import resnet18, resnet34, resnet50
from fdk.models.deeplab import deeplabv3_mobilenet, deeplabv3_resnet50
from fdk.models.imagenet import mobilenetv2_imagenet, resnet18_imagenet, resnet50_imagenet
from fdk.models.mobilenetv2 import mobilenetv2
from fdk.models.resnet_tiny import (
    resnet8,
    resnet8x4,
    resnet20,
    resnet32,
    resnet32x4,
    resnet56,
    resnet110,
)
from fdk.models.seg_small import segnet_small, segnet_tiny
from fdk.models.shufflenetv2 import shufflenetv2
from fdk.models.vgg import vgg8, vgg11, vgg13
from fdk.models.wide_resnet import wrn16_1, wrn16_2, wrn40_1, wrn40_2
from fdk.utils import FdkError

CIFAR_MODELS = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "wrn16_1": wrn16_1,
    "wrn16_2": wrn16_2,
    "wrn40_1": wrn40_1,
    "wrn40_2": wrn40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "resnet8": resnet8,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "mobilenetv2": mobilenetv2,
    "shufflenetv2": shufflenetv2,
}
IMAGENET_MODELS = {
    "resnet18_imagenet": resnet18_imagenet,
    "resnet50_imagenet": resnet50_imagenet,
    "mobilenetv2_imagenet": mobilenetv2_imagenet,
}
# Logits (B, C, H, W) at the input's size (docs/method.md §12): upstream's NYUv2 DeepLabV3s (output_stride=8
# by default) and a CPU-sized pair.
SEGMENTATION_MODELS = {
    "deeplabv3_resnet50": deeplabv3_resnet50,
    "deeplabv3_mobilenet": deeplabv3_mobilenet,
    "segnet_small": segnet_small,
    "segnet_tiny": segnet_tiny,
}
MODELS = {**CIFAR_MODELS, **IMAGENET_MODELS, **SEGMENTATION_MODELS}


def check_architecture(field: str, name: str) -> None:
    if name not in MODELS:
        raise FdkError(f"{field}={name!r} is not a zoo architecture; choose one of: {', '.join(MODELS)}")


def create_model(name: str, num_classes: int = 10, **kwargs):
    """Build a zoo model by its upstream name, e.g. `create_model("wrn40_2", 100)`."""
    check_architecture("architecture", name)
    return MODELS[name](num_classes=num_classes, **kwargs)


def with_random_bn_statistics(model, mean_std: float = 0.2, var_range=(0.5, 1.5)):
    """Give an untrained model non-trivial BN running statistics (in place; returns it), so that BN
    inversion has something to match: for tests and speed benchmarks, where only shapes matter."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, mean_std)
                m.running_var.uniform_(*var_range)
    return model
