"""ImageNet networks from torchvision, with the zoo's `forward(x, return_features)`.

The state-dict keys are torchvision's own, so torchvision weights load unchanged: from a local file
(`weights="path/to/resnet50.pth"`) or, with internet, by torchvision's download (`weights="DEFAULT"`
or a weights enum name such as "IMAGENET1K_V1"), which `torchvision_weights_file` keeps in torch.hub's cache.
"""

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import MobileNetV2, ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from fdk.checkpoint import load_state_dict_file
from fdk.utils import FdkError


class ResNetImageNet(ResNet):
    def forward(self, x, return_features: bool = False):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        features = torch.flatten(self.avgpool(x), 1)
        logits = self.fc(features)
        return (logits, features) if return_features else logits


class MobileNetV2ImageNet(MobileNetV2):
    def forward(self, x, return_features: bool = False):
        x = torch.nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        features = torch.flatten(x, 1)
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


TORCHVISION_NAMES = {  # zoo ImageNet arch -> torchvision's model name
    "resnet18_imagenet": "resnet18",
    "resnet50_imagenet": "resnet50",
    "mobilenetv2_imagenet": "mobilenet_v2",
}


def _weights_enum(arch: str, name: str):
    """torchvision's weights entry `name` ("DEFAULT", "IMAGENET1K_V1", ...) for a zoo ImageNet arch."""
    if arch not in TORCHVISION_NAMES:
        raise FdkError(f"torchvision has no ImageNet weights for {arch!r}; use one of {', '.join(TORCHVISION_NAMES)}")
    enum = torchvision.models.get_model_weights(TORCHVISION_NAMES[arch])
    try:
        return enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError:
        raise FdkError(
            f"{name!r} is neither a file nor a torchvision weights name for {arch}; "
            f"choose one of {['DEFAULT'] + [w.name for w in enum]} or give a local .pth/.safetensors path"
        ) from None


def torchvision_weights_file(arch: str, name: str = "DEFAULT") -> Path:
    """The local file of torchvision's weights `name` for arch, downloaded once into torch.hub's checkpoint
    cache, the file torchvision itself would use; a cached file needs no network. A file path (not an enum
    name) is what run records and `resume` need, so distillation from torchvision weights resumes offline."""
    chosen = _weights_enum(arch, name)
    filename = Path(urlparse(chosen.url).path).name
    target = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # download_url_to_file writes a temporary file and moves it: no half file is left behind
        torch.hub.download_url_to_file(chosen.url, str(target), progress=True)
    except Exception as error:  # no internet (URLError, timeouts, proxies): the fix is a local file
        reason = " ".join(str(getattr(error, "reason", None) or error).split()) or type(error).__name__
        raise FdkError(
            f"could not download {chosen.url} ({reason}); download it elsewhere and pass the file: "
            f"--teacher path/to/{filename} (or put it at {target})"
        ) from None
    return target


def _load_weights(model: torch.nn.Module, name: str, weights: str | None) -> torch.nn.Module:
    if weights is None:
        return model
    path = Path(weights) if Path(weights).exists() else torchvision_weights_file(name, weights)
    try:
        model.load_state_dict(load_state_dict_file(path))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[1] if "\n" in str(error) else str(error)
        raise FdkError(f"{path} does not fit {name} ({first.strip()}); is it torchvision's {name} file?") from None
    return model


def resnet18_imagenet(num_classes: int = 1000, weights: str | None = None) -> ResNetImageNet:
    model = ResNetImageNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    return _load_weights(model, "resnet18_imagenet", weights)


def resnet50_imagenet(num_classes: int = 1000, weights: str | None = None) -> ResNetImageNet:
    model = ResNetImageNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
    return _load_weights(model, "resnet50_imagenet", weights)


def mobilenetv2_imagenet(num_classes: int = 1000, weights: str | None = None) -> MobileNetV2ImageNet:
    model = MobileNetV2ImageNet(num_classes=num_classes)
    return _load_weights(model, "mobilenetv2_imagenet", weights)
