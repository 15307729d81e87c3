"""Wide ResNets WRN-depth-k (the ZSKT variant used by the upstream zoo, docs/method.md §10).

Pre-activation blocks; n = (depth - 4) / 6 blocks per group; widths 16, 16k, 32k, 64k. When a block
changes width, its shortcut is a 1x1 conv (`convShortcut`) applied to the *activated* input, and that
activation replaces x itself (so the residual path sees relu(bn1(x)) too).
"""

import math

import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        activated = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(activated)))
        out = self.conv2(out)
        shortcut = x if self.equal_in_out else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of n blocks; the extra `.layer` level is part of the upstream key names."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        # Upstream initialisation: He-normal over fan-out for convs, BN at identity, zero Linear bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x, return_features: bool = False):
        out = self.block3(self.block2(self.block1(self.conv1(x))))  # (B, 64k, 8, 8)
        out = F.relu(self.bn1(out))
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 64k); = avg_pool2d(8) at 32x32
        logits = self.fc(features)
        return (logits, features) if return_features else logits


def wrn16_1(num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 1, num_classes)


def wrn16_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 2, num_classes)


def wrn40_1(num_classes: int = 10) -> WideResNet:
    return WideResNet(40, 1, num_classes)


def wrn40_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(40, 2, num_classes)
