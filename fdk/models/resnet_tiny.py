"""Small CIFAR ResNets resnet8/20/32/56/110, resnet8x4, resnet32x4 (RepDistiller variant, docs/method.md §10).

depth = 6n + 2 with n basic blocks per stage; three stages of widths w1, w2, w3 after a w0 stem.
A stage's first block gets a 1x1-conv projection (`downsample.{0,1}`) when its stride or width changes.
"""

import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ResNetTiny(nn.Module):
    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for stage, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # upstream initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x, return_features: bool = False):
        out = F.relu(self.bn1(self.conv1(x)))  # (B, w0, 32, 32)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, w3, 8, 8)
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, w3); = AvgPool2d(8) at 32x32
        logits = self.fc(features)
        return (logits, features) if return_features else logits


def _tiny(depth: int, widths: tuple[int, int, int, int]):
    def build(num_classes: int = 10) -> ResNetTiny:
        return ResNetTiny(depth, widths, num_classes)

    build.__name__ = f"resnet{depth}" + ("x4" if widths[0] == 32 else "")
    return build


resnet8 = _tiny(8, (16, 16, 32, 64))
resnet20 = _tiny(20, (16, 16, 32, 64))
resnet32 = _tiny(32, (16, 16, 32, 64))
resnet56 = _tiny(56, (16, 16, 32, 64))
resnet110 = _tiny(110, (16, 16, 32, 64))
resnet8x4 = _tiny(8, (32, 64, 128, 256))
resnet32x4 = _tiny(32, (32, 64, 128, 256))
