"""VGG-8/11/13 with BatchNorm (the RepDistiller variant used by the upstream zoo, docs/method.md §10).

Five conv blocks; inside a block each conv is [Conv3x3(bias), BN, ReLU] except that the block's last
ReLU is dropped and applied in `forward` instead (this keeps the upstream key indices: block2.0/1 and
block2.3/4). `pool3` runs only for 64x64 inputs, so at 32x32 blocks 3 and 4 both work at 4x4.
"""

import torch.nn as nn
import torch.nn.functional as F

CHANNELS = {  # convs per block
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


def _conv_block(channels: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in channels:
        layers += [nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        in_channels = c
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, channels: list[list[int]], num_classes: int = 10):
        super().__init__()
        in_channels = 3
        for b, block in enumerate(channels):
            setattr(self, f"block{b}", _conv_block(block, in_channels))
            in_channels = block[-1]
        self.pool0, self.pool1, self.pool2, self.pool3 = (nn.MaxPool2d(2) for _ in range(4))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():  # upstream initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x, return_features: bool = False):
        height = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))  # (B, 64, 16, 16)
        x = self.pool1(F.relu(self.block1(x)))  # (B, 128, 8, 8)
        x = self.pool2(F.relu(self.block2(x)))  # (B, 256, 4, 4)
        x = F.relu(self.block3(x))
        if height == 64:
            x = self.pool3(x)
        x = F.relu(self.block4(x))  # (B, 512, 4, 4)
        features = self.pool4(x).flatten(1)  # (B, 512)
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


def vgg8(num_classes: int = 10) -> VGG:
    return VGG(CHANNELS["vgg8"], num_classes)


def vgg11(num_classes: int = 10) -> VGG:
    return VGG(CHANNELS["vgg11"], num_classes)


def vgg13(num_classes: int = 10) -> VGG:
    return VGG(CHANNELS["vgg13"], num_classes)
