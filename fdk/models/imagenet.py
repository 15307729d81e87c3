"""ImageNet networks from torchvision, with the zoo's `forward(x, return_features)`.

The state-dict keys are torchvision's own, so torchvision weights load unchanged: from a local file
(`weights="path/to/resnet50.pth"`) or, with internet, by torchvision's download (`weights="DEFAULT"`
or a weights enum name such as "IMAGENET1K_V1").
"""

from pathlib import Path

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


_TORCHVISION_NAMES = {
    "resnet18_imagenet": "resnet18",
    "resnet50_imagenet": "resnet50",
    "mobilenetv2_imagenet": "mobilenet_v2",
}


def _load_weights(model: torch.nn.Module, name: str, weights: str | None) -> torch.nn.Module:
    if weights is None:
        return model
    if Path(weights).exists():
        try:
            model.load_state_dict(load_state_dict_file(weights))
        except RuntimeError as error:
            first = str(error).strip().splitlines()[1] if "\n" in str(error) else str(error)
            raise FdkError(
                f"{weights} does not fit {name} ({first.strip()}); is it torchvision's {name} file?"
            ) from None
        return model
    enum = torchvision.models.get_model_weights(_TORCHVISION_NAMES[name])
    try:
        chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        raise FdkError(
            f"{weights!r} is neither a file nor a torchvision weights name for {name}; "
            f"choose one of {[w.name for w in enum]} or give a local .pth/.safetensors path"
        ) from None
    try:
        state = chosen.get_state_dict(progress=True)
    except Exception as error:  # no internet: say where to put the file instead
        raise FdkError(
            f"could not download {chosen.url} ({error}); download it elsewhere and pass the local file path as weights"
        ) from error
    model.load_state_dict(state)
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
