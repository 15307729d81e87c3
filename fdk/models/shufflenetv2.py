"""ShuffleNetV2 1x as the upstream zoo registers it under `shufflenetv2` (upstream `classifiers/shufflenetv2.py`,
`shuffle_v2`: RepDistiller's CIFAR ShuffleNetV2 with net_size=1).

The stem is a 1x1 conv 3->24 with stride 1 and no max-pool (upstream replaced the usual 3x3 conv). Three
stages of widths 116/232/464 each open with a `DownBlock` (stride 2, two branches concatenated) followed by
3/7/3 `BasicBlock`s (the channels are split in half: the first half passes through, the second goes
1x1 -> 3x3 depthwise -> 1x1), so the stages hold 4/8/4 blocks and `layer{s}.0` is the DownBlock. Every block
ends with a two-group channel shuffle. Then `conv2` 1x1 to 1024, `bn2`, ReLU and the head `linear` (C, 1024).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def channel_shuffle(x, groups: int = 2):
    """(B, g * k, H, W) -> view as (B, g, k) channels -> transpose to (B, k, g) -> flatten back."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class BasicBlock(nn.Module):
    """Keeps width and resolution; the convs act on the second half of the channels."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x):
        keep, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))  # no ReLU after the depthwise conv
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([keep, out], 1))


class DownBlock(nn.Module):
    """Halves the resolution; each branch yields out_channels / 2 channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch: 3x3 depthwise stride 2, then 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1, 3x3 depthwise stride 2, 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(
        self,
        widths: tuple[int, int, int, int] = (116, 232, 464, 1024),
        blocks_per_stage: tuple[int, int, int] = (3, 7, 3),
        num_classes: int = 10,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        for stage, (width, n) in enumerate(zip(widths[:3], blocks_per_stage), start=1):
            blocks = [DownBlock(in_channels, width)] + [BasicBlock(width) for _ in range(n)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            in_channels = width
        self.conv2 = nn.Conv2d(widths[2], widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x, return_features: bool = False):
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 24, 32, 32)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 464, 4, 4)
        out = F.relu(self.bn2(self.conv2(out)))  # (B, 1024, 4, 4)
        features = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 1024); = avg_pool2d(4) at 32x32
        logits = self.linear(features)
        return (logits, features) if return_features else logits


def shufflenetv2(num_classes: int = 10) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes)
