"""Segmentation models: upstream's NYUv2 DeepLabV3s (exact state-dict layout) and the CPU-sized SegNet pair.

DeepLabV3-ResNet50 has 40M parameters: it runs one real forward; every other check on it is shape-only,
on the meta device (nothing allocated, nothing computed).
"""

import hashlib
import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

from fdk.models import MODELS, SEGMENTATION_MODELS, create_model, imagenet_backbone_weights, load_backbone_weights
from fdk.utils import FdkError

# Measured against upstream zju-vipa/Fast-Datafree commit 0dcecbc178b87048bedf730acb577045b3c0b57a by building
# its datafree/models/deeplab classes (num_classes=13, output_stride=8, pretrained_backbone=False) outside this
# repo. The digest is sha256 over the sorted "key:shape" lines of the state dict (first 16 hex digits); the same
# for output_stride=16. With upstream's weights loaded, our outputs equalled upstream's exactly (max |diff| 0.0)
# at 128, 100, 97 and 64 px and both output strides.
UPSTREAM = {
    "deeplabv3_resnet50": dict(params=39_636_813, bn=60, keys=362, digest="084a8a40578be7d1"),
    "deeplabv3_mobilenet": dict(params=5_111_821, bn=58, keys=350, digest="3b57894fcd179ca7"),
}
UPSTREAM_KEYS = {
    "deeplabv3_resnet50": [
        "backbone.conv1.weight",
        "backbone.layer1.0.downsample.1.running_mean",
        "backbone.layer4.2.bn3.weight",
        "classifier.classifier.0.convs.0.0.weight",
        "classifier.classifier.0.convs.4.1.weight",  # image pooling: [pool, conv, bn, relu]
        "classifier.classifier.0.project.1.running_var",
        "classifier.classifier.4.bias",
    ],
    "deeplabv3_mobilenet": [
        "backbone.low_level_features.0.0.weight",
        "backbone.low_level_features.3.conv.3.running_mean",
        "backbone.high_level_features.4.conv.0.0.weight",  # a slice keeps its indices: high starts at 4
        "backbone.high_level_features.17.conv.2.weight",
        "classifier.classifier.0.convs.3.0.weight",
        "classifier.classifier.1.weight",
    ],
}


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, 13, **kwargs)


def key_digest(state: dict) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def resnet_deeplab():
    return create_model("deeplabv3_resnet50", 13)


def test_registered_in_the_zoo():
    assert set(SEGMENTATION_MODELS) == {"deeplabv3_resnet50", "deeplabv3_mobilenet", "segnet_small", "segnet_tiny"}
    assert set(SEGMENTATION_MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_deeplab_matches_upstream_layout(name):
    model = on_meta(name)
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == UPSTREAM[name]["params"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == UPSTREAM[name]["bn"]
    assert len(state) == UPSTREAM[name]["keys"]
    assert set(UPSTREAM_KEYS[name]) <= set(state)
    assert key_digest(state) == UPSTREAM[name]["digest"]


def test_mobilenet_deeplab_shapes_eval_and_train():
    model = create_model("deeplabv3_mobilenet", 13)
    for size in (128, 64):
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 13, size, size)
            # train mode: batch 2, since the image-pooling branch's BN sees one value per channel and image
            assert model.train()(torch.randn(2, 3, size, size)).shape == (2, 13, size, size)
    logits, features = model.eval()(torch.randn(1, 3, 64, 64), return_features=True)
    assert logits.shape == (1, 13, 64, 64) and features.shape == (1, 320, 8, 8)


def test_resnet_deeplab_shapes(resnet_deeplab):
    # the one real forward of the 40M-parameter model; the other sizes and modes on the meta device
    assert resnet_deeplab.train()(torch.randn(2, 3, 128, 128)).shape == (2, 13, 128, 128)
    model = on_meta("deeplabv3_resnet50")
    for size in (128, 64):
        assert model.eval()(torch.empty(1, 3, size, size, device="meta")).shape == (1, 13, size, size)
        assert model.train()(torch.empty(2, 3, size, size, device="meta")).shape == (2, 13, size, size)


@pytest.mark.parametrize("name, channels", [("deeplabv3_resnet50", 2048), ("deeplabv3_mobilenet", 320)])
def test_output_stride_sets_aspp_rates_and_feature_size(name, channels):
    for output_stride, rates in ((8, (12, 24, 36)), (16, (6, 12, 18))):
        model = on_meta(name, output_stride=output_stride).eval()
        aspp = model.classifier.classifier[0]
        assert tuple(aspp.convs[i][0].dilation[0] for i in (1, 2, 3)) == rates
        for size in (128, 64):
            features = model.backbone(torch.empty(1, 3, size, size, device="meta"))
            side = size // output_stride
            assert features.shape == (1, channels, side, side)


def test_resnet_output_stride_16_dilates_only_layer4():
    os8, os16 = on_meta("deeplabv3_resnet50", output_stride=8), on_meta("deeplabv3_resnet50", output_stride=16)
    assert os8.backbone.layer3[0].conv2.stride == (1, 1) and os8.backbone.layer3[1].conv2.dilation == (2, 2)
    assert os8.backbone.layer4[1].conv2.dilation == (4, 4)
    assert os16.backbone.layer3[0].conv2.stride == (2, 2) and os16.backbone.layer3[1].conv2.dilation == (1, 1)
    assert os16.backbone.layer4[1].conv2.dilation == (2, 2)


def test_unsupported_output_stride_is_an_fdk_error():
    with pytest.raises(FdkError, match="output_stride must be 8 or 16, got 32"):
        create_model("deeplabv3_mobilenet", 13, output_stride=32)


def test_load_resnet50_backbone_round_trip(resnet_deeplab, tmp_path):
    source = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(source, path)
    head_before = resnet_deeplab.classifier.classifier[4].weight.clone()
    load_backbone_weights(resnet_deeplab, path)
    loaded = resnet_deeplab.backbone.state_dict()
    assert set(source) - set(loaded) == {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], source[k]) for k in loaded)
    assert torch.equal(resnet_deeplab.classifier.classifier[4].weight, head_before)  # the head is left alone


def test_load_mobilenet_v2_backbone_from_safetensors(tmp_path):
    source = torchvision.models.mobilenet_v2(weights=None).state_dict()
    path = tmp_path / "mobilenet_v2.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, path)
    model = load_backbone_weights(create_model("deeplabv3_mobilenet", 13), path)
    loaded = model.backbone.state_dict()
    for key, value in loaded.items():  # features.i -> low_level_features.i (i < 4) / high_level_features.i
        assert torch.equal(value, source["features." + key.split(".", 1)[1]]), key
    assert "features.18.0.weight" in source and len(loaded) == len(source) - 2 - 6  # classifier, features.18


def test_load_backbone_weights_wrong_or_missing_file(tmp_path):
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), path)
    message = r"does not fit the resnet50 backbone \(missing \d+ keys .*unexpected .*torchvision's ImageNet resnet50"
    with pytest.raises(FdkError, match=message) as error:
        load_backbone_weights(on_meta("deeplabv3_resnet50"), path)
    assert "\n" not in str(error.value)
    with pytest.raises(FdkError, match="does not exist"):
        load_backbone_weights(on_meta("deeplabv3_mobilenet"), tmp_path / "absent.pth")
    with pytest.raises(FdkError, match="takes a DeepLabV3 .*not a SegNet"):
        load_backbone_weights(create_model("segnet_tiny", 13), path)


def test_imagenet_backbone_weights_offline_says_pass_a_local_file(tmp_path, monkeypatch):
    def offline(url, dst, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FdkError, match="mobilenet_v2.*pass its local path to load_backbone_weights") as error:
        imagenet_backbone_weights("deeplabv3_mobilenet")
    assert "\n" not in str(error.value) and "https://download.pytorch.org/models/" in str(error.value)
    cached = tmp_path / "checkpoints" / "mobilenet_v2-b0353104.pth"  # already downloaded: no network needed
    cached.touch()
    assert imagenet_backbone_weights("deeplabv3_mobilenet") == cached
    with pytest.raises(FdkError, match="no ImageNet backbone weights for 'segnet_small'"):
        imagenet_backbone_weights("segnet_small")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_segnet_pair_sizes_and_shapes():
    teacher, student = create_model("segnet_small", 13), create_model("segnet_tiny", 13)
    assert 300_000 <= count_params(teacher) <= 1_000_000
    assert 4 <= count_params(teacher) / count_params(student) <= 8
    for model in (teacher, student):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs) - 1  # all but the head
        for size in (64, 128):
            with torch.no_grad():
                assert model.eval()(torch.randn(1, 3, size, size)).shape == (1, 13, size, size)
            assert model.train()(torch.randn(2, 3, size, size)).shape == (2, 13, size, size)
        _, features = model(torch.randn(2, 3, 64, 64), return_features=True)
        assert features.shape[-2:] == (16, 16)


def colour_blocks(n: int, num_classes: int, seed: int = 0):
    """Images whose 8x8 blocks each have one class's colour (plus noise), and the per-pixel labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n, 8, 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    colours = torch.randn(num_classes, 3, generator=g)
    images = colours[labels].permute(0, 3, 1, 2) + 0.3 * torch.randn(n, 3, 64, 64, generator=g)
    return images, labels


@pytest.mark.parametrize("name", ["segnet_small", "segnet_tiny"])
def test_segnet_learns(name):
    model = create_model(name, 4).train()
    images, labels = colour_blocks(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], losses  # measured: about 0.1-0.2
