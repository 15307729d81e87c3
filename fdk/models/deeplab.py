"""DeepLabV3, the teacher and student of FastDFKD's NYUv2 segmentation experiment (docs/method.md §12).

The state-dict keys are upstream's (`datafree/models/deeplab`), so its checkpoints load as they are:
`backbone.*` is the classification network cut before its pooling (ResNet-50: `conv1` ... `layer4`;
MobileNetV2: `low_level_features` = features[0:4], `high_level_features` = features[4:-1], slices that
keep their original indices, so its keys run high_level_features.4 ... .17) and
`classifier.classifier.*` is the head: ASPP -> 3x3 conv 256 -> 1x1 conv to the classes.
The backbone reaches its output stride (8 or 16) by dilating instead of striding; the logits come out at
input_size / output_stride and are resized bilinearly to the input size.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from fdk.checkpoint import load_state_dict_file
from fdk.utils import FdkError

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}  # dilations scale with the feature map's resolution
ASPP_WIDTH = 256
# MobileNetV2's stages: expand ratio t, output width c, number of blocks n, stride s of the first block.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
LOW_LEVEL_BLOCKS = 4  # features[0:4]: stem, 16-wide and the two 24-wide blocks (stride 4)
KEPT_BLOCKS = 1 + sum(n for _, _, n, _ in STAGES)  # stem + 17 blocks; features[18] (to 1280) is dropped


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel - 1) // 2  # "same" padding, so every ASPP branch keeps the map's size
    conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ASPPPooling(nn.Sequential):
    """The image-level branch: global context as one 1x1 vector per image, broadcast back to (h, w).
    Its BN sees one value per channel and image, so training mode needs a batch of at least 2."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout, 1))

    def forward(self, x):
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Five parallel views of the (B, cin, h, w) map: 1x1, three dilated 3x3, image pooling; each gives
    256 channels, concatenated (1280) and projected back to 256 -> (B, 256, h, w)."""

    def __init__(self, cin: int, rates: tuple[int, int, int]):
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(cin, ASPP_WIDTH, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(cin, ASPP_WIDTH, 3, rate)) for rate in rates]
        branches.append(ASPPPooling(cin, ASPP_WIDTH))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(5 * ASPP_WIDTH, ASPP_WIDTH, 1), nn.Dropout(0.1))

    def forward(self, x):
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Module):
    """(B, cin, h, w) backbone features -> (B, num_classes, h, w) logits. The Sequential sits under the
    attribute `classifier` (hence upstream's doubled `classifier.classifier.*` keys)."""

    def __init__(self, cin: int, num_classes: int, rates: tuple[int, int, int]):
        super().__init__()
        self.classifier = nn.Sequential(
            ASPP(cin, rates), *_conv_bn_relu(ASPP_WIDTH, ASPP_WIDTH, 3), nn.Conv2d(ASPP_WIDTH, num_classes, 1)
        )
        for m in self.modules():  # upstream's head init; its BN 1/0 is PyTorch's default already
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        return self.classifier(x)


class Backbone(nn.ModuleDict):
    """Named stages run in order; the last one's output is the feature map. The names are the keys'
    prefixes, as upstream's IntermediateLayerGetter keeps them."""

    def forward(self, x):
        for stage in self.values():
            x = stage(x)
        return x


def resnet50_backbone(output_stride: int) -> Backbone:
    """torchvision's ResNet-50 (upstream's backbone file is torchvision's, same keys and init) without
    `avgpool`/`fc`. Output stride 8 dilates layer3 and layer4, 16 only layer4 -> (B, 2048, H/os, W/os)."""
    net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, output_stride == 8, True])
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return Backbone({name: getattr(net, name) for name in names})


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, NO padding: the block pads its input once), BN, ReLU6 at indices 0, 1, 2."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        conv = nn.Conv2d(cin, cout, kernel, stride, 0, dilation=dilation, groups=groups, bias=False)
        super().__init__(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2 block with upstream's padding: the input is zero-padded by `dilation` on every side
    (what a dilated 3x3 needs to keep its size) BEFORE the 1x1 expansion, so the expansion's BN/ReLU6 also
    run on the border. Checkpoints trained this way expect exactly that, hence not torchvision's padding."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        layers: list[nn.Module] = [] if expand_ratio == 1 else [ConvBNReLU6(cin, hidden, 1)]
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, dilation, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear projection: BN, no activation
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.padding = dilation
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv(F.pad(x, [self.padding] * 4))
        return x + out if self.use_residual else out


def mobilenetv2_backbone(output_stride: int) -> Backbone:
    """Upstream's MobileNetV2 without its last 1x1 conv to 1280 and its classifier -> (B, 320, ~H/os, ~W/os).

    The stem conv is unpadded as upstream's (128 px -> 63; at os 8, 97 px -> 12 where padding gives 13).
    Once the stride reaches output_stride, later stages keep stride 1 and multiply the dilation by their
    stride instead; a stage's first block still uses the previous dilation, as upstream's does."""
    layers: list[nn.Module] = [ConvBNReLU6(3, 32, 3, stride=2)]
    cin, stride_so_far, dilation = 32, 2, 1
    for t, c, n, s in STAGES:
        first_dilation = dilation
        if stride_so_far == output_stride:
            stride, dilation = 1, dilation * s
        else:
            stride, stride_so_far = s, stride_so_far * s
        for i in range(n):
            layers.append(InvertedResidual(cin, c, stride if i == 0 else 1, first_dilation if i == 0 else dilation, t))
            cin = c
    features = nn.Sequential(*layers)
    for m in features.modules():  # upstream's (= torchvision's) MobileNetV2 init; BN keeps its default 1/0
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
    # Slicing a Sequential keeps the children's names: high_level_features starts at "4", as upstream's keys do.
    low, high = features[:LOW_LEVEL_BLOCKS], features[LOW_LEVEL_BLOCKS:]
    return Backbone({"low_level_features": low, "high_level_features": high})


class DeepLabV3(nn.Module):
    """(B, 3, H, W) -> (B, num_classes, H, W) logits; `return_features` adds the backbone's feature map."""

    def __init__(self, backbone: Backbone, classifier: DeepLabHead, backbone_name: str):
        super().__init__()
        self.backbone, self.classifier = backbone, classifier
        self.backbone_name = backbone_name  # torchvision's name, for load_backbone_weights

    def forward(self, x, return_features: bool = False):
        features = self.backbone(x)
        logits = F.interpolate(self.classifier(features), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, features) if return_features else logits


def _deeplab(build_backbone, channels: int, name: str, num_classes: int, output_stride: int) -> DeepLabV3:
    if output_stride not in ASPP_RATES:
        raise FdkError(f"output_stride must be 8 or 16, got {output_stride}")
    backbone = build_backbone(output_stride)  # built before the head, as upstream does
    return DeepLabV3(backbone, DeepLabHead(channels, num_classes, ASPP_RATES[output_stride]), name)


def deeplabv3_resnet50(num_classes: int = 13, output_stride: int = 8) -> DeepLabV3:
    return _deeplab(resnet50_backbone, 2048, "resnet50", num_classes, output_stride)


def deeplabv3_mobilenet(num_classes: int = 13, output_stride: int = 8) -> DeepLabV3:
    return _deeplab(mobilenetv2_backbone, 320, "mobilenet_v2", num_classes, output_stride)


def _backbone_keys(state: dict, backbone_name: str) -> dict:
    """A torchvision classifier state dict -> the backbone's keys: drop the classifier (`fc.*`,
    `classifier.*`); for MobileNetV2 also drop features.18 (the 1x1 conv to 1280 the backbone leaves out)
    and rename `features.i` to low_level_features.i (i < 4) or high_level_features.i (the index is kept)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("fc.", "classifier.")):
            continue
        head, _, rest = key.partition(".")
        index = rest.partition(".")[0]
        if backbone_name == "mobilenet_v2" and head == "features" and index.isdigit():
            i = int(index)
            if i >= KEPT_BLOCKS:
                continue
            key = f"{'low' if i < LOW_LEVEL_BLOCKS else 'high'}_level_features.{rest}"
        out[key] = value
    return out


def load_backbone_weights(model: DeepLabV3, path) -> DeepLabV3:
    """Load torchvision-format ImageNet weights (a resnet50 / mobilenet_v2 state dict, .pth or .safetensors)
    into the backbone, in place; the head keeps its own initialisation, as with upstream's pretrained_backbone."""
    name = getattr(model, "backbone_name", None)
    if name is None:
        raise FdkError(f"load_backbone_weights takes a DeepLabV3 (deeplabv3_*), not a {type(model).__name__}")
    state = _backbone_keys(load_state_dict_file(path), name)  # FdkError when missing or unreadable
    expected = model.backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    clashes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or clashes:
        detail = ", ".join(
            f"{label} {len(keys)} keys (e.g. {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape of", clashes))
            if keys
        )
        raise FdkError(
            f"{path} does not fit the {name} backbone ({detail}); pass torchvision's ImageNet {name} state dict"
        )
    model.backbone.load_state_dict(state)
    return model


# IMAGENET1K_V1, torchvision's original weights, as upstream's pretrained_backbone=True used: mobilenet_v2's is
# upstream's very file; for resnet50 upstream named resnet50-19c8e357.pth, torchvision now serves resnet50-0676ba61.
_IMAGENET_WEIGHTS = {
    "deeplabv3_resnet50": ("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    "deeplabv3_mobilenet": ("mobilenet_v2", torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
}


def imagenet_backbone_weights(arch: str) -> Path:
    """The path of torchvision's ImageNet weights for arch's backbone, downloaded once into torch's hub
    cache (the place torchvision itself uses); without internet, say which file to fetch elsewhere."""
    if arch not in _IMAGENET_WEIGHTS:
        raise FdkError(f"no ImageNet backbone weights for {arch!r}; choose one of {', '.join(_IMAGENET_WEIGHTS)}")
    name, weights = _IMAGENET_WEIGHTS[arch]
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(weights.url, str(target), progress=False)
        except Exception as error:  # no internet (URLError, timeouts, proxies): the fix is a local file
            reason = " ".join(str(error).split()) or type(error).__name__
            raise FdkError(
                f"could not download torchvision's ImageNet {name} weights from {weights.url} ({reason}); "
                "download that file elsewhere and pass its local path to load_backbone_weights"
            ) from None
    return target
