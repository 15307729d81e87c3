"""MobileNetV2 as the upstream zoo registers it under `mobilenetv2` (upstream `classifiers/mobilenetv2.py`).

Upstream's file is torchvision's ImageNet MobileNetV2 at width 1.0, unchanged: the stem conv has stride 2
and the stage strides are ImageNet's, so the total stride is 32 and a 32x32 CIFAR image leaves `features`
at 1x1. Inverted residual blocks: 1x1 expansion (absent when t = 1), 3x3 depthwise, then a 1x1 projection
with BN but no activation; the input is added back only when the block keeps stride 1 and width. ReLU6
everywhere else. The head is `classifier = [Dropout(0.2), Linear(1280, C)]`, hence the key `classifier.1`.
Upstream's forward has no `return_features`; ours adds it (the pooled 1280-d vector, before the dropout).
The key names are torchvision's own, so `torchvision.models.mobilenet_v2(num_classes=C)` weights load too.
"""

import torch.nn as nn
import torch.nn.functional as F

# One row per stage: expand ratio t, output width c, number of blocks n, stride s of its first block.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias), BN, ReLU6 at indices 0, 1, 2: the indices are part of the key names."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_planes * expand_ratio
        self.use_residual = stride == 1 and in_planes == out_planes
        layers: list[nn.Module] = [] if expand_ratio == 1 else [ConvBNReLU(in_planes, hidden, 1)]
        layers += [
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_planes, 1, bias=False),  # linear projection: BN, no activation
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        in_planes = 32
        for t, c, n, s in STAGES:
            for i in range(n):
                layers.append(InvertedResidual(in_planes, c, s if i == 0 else 1, t))
                in_planes = c
        layers.append(ConvBNReLU(in_planes, 1280, 1))
        self.features = nn.Sequential(*layers)  # features.0 stem, .1-.17 blocks, .18 the 1x1 to 1280
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():  # upstream (torchvision) initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x, return_features: bool = False):
        out = self.features(x)  # (B, 1280, 1, 1): the stem is at 16x16, the last stage at 1x1
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 1280)
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


def mobilenetv2(num_classes: int = 10) -> MobileNetV2:
    return MobileNetV2(num_classes)
