"""CIFAR ResNet-18/34/50 (the DAFL variant used by the upstream zoo, docs/method.md §10).

3x3 stem with stride 1 and no max-pool, so a 32x32 input reaches layer4 at 4x4. The head is called
`linear` (not `fc`) and the projection shortcut is `shortcut.{0,1}`: both names are part of the
state-dict layout that upstream teacher checkpoints use. resnet18/34 stack basic blocks; resnet50
(upstream `classifiers/resnet.py`, registry name `resnet50`) stacks bottlenecks 1x1 -> 3x3 -> 1x1
whose output is 4x the stage width, so its head sees 2048 features.
"""

import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()  # identity; an empty Sequential has no state-dict keys
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce to `planes`, 3x3 (carries the stride), 1x1 expand to 4 * planes."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:  # every stage's first block, layer1 included (64 -> 256)
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        blocks_per_stage: list[int],
        num_classes: int = 10,
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for stage, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), blocks_per_stage, (1, 2, 2, 2)), start=1):
            blocks = []
            for i in range(n):
                blocks.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def forward(self, x, return_features: bool = False):
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 64, 32, 32)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 512 * expansion, 4, 4)
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 512 * expansion)
        logits = self.linear(features)
        return (logits, features) if return_features else logits


def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 10) -> ResNet:
    return ResNet([3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 10) -> ResNet:
    return ResNet([3, 4, 6, 3], num_classes, block=Bottleneck)
