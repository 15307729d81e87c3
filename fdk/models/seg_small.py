"""A small segmentation teacher/student pair that trains on a 2-core CPU in minutes on 64x64 images.

The DeepLabV3s (fdk/models/deeplab.py) need a GPU; these keep their shape at toy scale, so segmentation
distillation can be tried and tested anywhere: a stride-4 convolutional encoder, a dilated context block
(DeepLab's reason for dilation: a wider view without losing resolution), a 1x1 classifier and bilinear
upsampling of the logits to the input size. Every conv but the classifier is followed by nn.BatchNorm2d,
whose running statistics are what data-free synthesis matches.
"""

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class SegNetShape:
    widths: tuple[int, int, int]  # channels at stride 2, stride 4, and of the context block
    dilations: tuple[int, ...]  # one 3x3 conv per entry in the context block


TEACHER = SegNetShape(widths=(32, 64, 128), dilations=(2, 4))
STUDENT = SegNetShape(widths=(16, 32, 64), dilations=(2,))


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv with "same" padding (halving the size at stride 2), BN, ReLU."""
    conv = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ContextBlock(nn.Module):
    """Dilated 3x3 convs with a residual connection: (B, C, h, w) -> (B, C, h, w), receptive field widened
    by 2 * sum(dilations) pixels of the stride-4 map while the resolution stays."""

    def __init__(self, width: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.Sequential(*(conv_bn_relu(width, width, dilation=d) for d in dilations))

    def forward(self, x):
        return x + self.convs(x)


class SegNet(nn.Module):
    """(B, 3, H, W) -> (B, num_classes, H, W) logits; `return_features` adds the (B, C, H/4, W/4) context map."""

    def __init__(self, shape: SegNetShape, num_classes: int):
        super().__init__()
        w1, w2, w3 = shape.widths
        self.encoder = nn.Sequential(
            conv_bn_relu(3, w1, stride=2),  # (B, w1, H/2, W/2)
            conv_bn_relu(w1, w1),
            conv_bn_relu(w1, w2, stride=2),  # (B, w2, H/4, W/4)
            conv_bn_relu(w2, w3),
        )
        self.context = ContextBlock(w3, shape.dilations)
        self.classifier = nn.Conv2d(w3, num_classes, 1)  # per-pixel logits at stride 4

    def forward(self, x, return_features: bool = False):
        features = self.context(self.encoder(x))
        logits = F.interpolate(self.classifier(features), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, features) if return_features else logits


def segnet_small(num_classes: int = 13) -> SegNet:
    """The teacher: about 0.4M parameters."""
    return SegNet(TEACHER, num_classes)


def segnet_tiny(num_classes: int = 13) -> SegNet:
    """The student: half the widths and one context conv, about 6x fewer parameters than segnet_small."""
    return SegNet(STUDENT, num_classes)
