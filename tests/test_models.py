"""The zoo against the upstream layouts written down from the reference doc (§4.2), not from code."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fdk.models import CIFAR_MODELS, MODELS, create_model


def bn(prefix: str, c: int) -> dict:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def resnet_layout(blocks_per_stage, c):
    """§4.2: conv1 3x3 3->64, bn1; layer1..4 widths 64/128/256/512 strides 1/2/2/2;
    layer{2,3,4}.0.shortcut.{0 (1x1 conv), 1 (BN)}; layer1 has no shortcut; head `linear` (C, 512)."""
    keys = {"conv1.weight": (64, 3, 3, 3), **bn("bn1", 64)}
    in_w = 64
    for stage, (w, n) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
        for i in range(n):
            p = f"layer{stage}.{i}"
            keys[f"{p}.conv1.weight"] = (w, in_w if i == 0 else w, 3, 3)
            keys.update(bn(f"{p}.bn1", w))
            keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
            keys.update(bn(f"{p}.bn2", w))
            if stage > 1 and i == 0:
                keys[f"{p}.shortcut.0.weight"] = (w, in_w, 1, 1)
                keys.update(bn(f"{p}.shortcut.1", w))
        in_w = w
    keys["linear.weight"], keys["linear.bias"] = (c, 512), (c,)
    return keys


def wrn_layout(depth, k, c):
    """§4.2: conv1 3->16; block{g}.layer.{i}.{bn1, conv1, bn2, conv2, convShortcut?}; bn1 (64k); fc."""
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    keys = {"conv1.weight": (16, 3, 3, 3)}
    for g in (1, 2, 3):
        for i in range(n):
            p = f"block{g}.layer.{i}"
            in_w = widths[g - 1] if i == 0 else widths[g]
            keys.update(bn(f"{p}.bn1", in_w))
            keys[f"{p}.conv1.weight"] = (widths[g], in_w, 3, 3)
            keys.update(bn(f"{p}.bn2", widths[g]))
            keys[f"{p}.conv2.weight"] = (widths[g], widths[g], 3, 3)
            # present at block2/3.layer.0 always, at block1.layer.0 only when k != 1
            if i == 0 and (g > 1 or k != 1):
                keys[f"{p}.convShortcut.weight"] = (widths[g], in_w, 1, 1)
    keys.update(bn("bn1", 64 * k))
    keys["fc.weight"], keys["fc.bias"] = (c, 64 * k), (c,)
    return keys


def vgg_layout(cfg, c):
    """§4.2: block{b}.{3j} conv (bias) and block{b}.{3j+1} BN per conv; classifier (C, 512)."""
    keys, in_w = {}, 3
    for b, convs in enumerate(cfg):
        for j, w in enumerate(convs):
            keys[f"block{b}.{3 * j}.weight"] = (w, in_w, 3, 3)
            keys[f"block{b}.{3 * j}.bias"] = (w,)
            keys.update(bn(f"block{b}.{3 * j + 1}", w))
            in_w = w
    keys["classifier.weight"], keys["classifier.bias"] = (c, 512), (c,)
    return keys


def tiny_layout(depth, widths, c):
    """RepDistiller resnet: conv1 (w0), layer1..3, downsample.{0,1} on a stage's first block when the
    stride or width changes; fc."""
    n = (depth - 2) // 6
    keys = {"conv1.weight": (widths[0], 3, 3, 3), **bn("bn1", widths[0])}
    in_w = widths[0]
    for stage, w in enumerate(widths[1:], start=1):
        for i in range(n):
            p = f"layer{stage}.{i}"
            keys[f"{p}.conv1.weight"] = (w, in_w if i == 0 else w, 3, 3)
            keys.update(bn(f"{p}.bn1", w))
            keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
            keys.update(bn(f"{p}.bn2", w))
            if i == 0 and (stage > 1 or in_w != w):
                keys[f"{p}.downsample.0.weight"] = (w, in_w, 1, 1)
                keys.update(bn(f"{p}.downsample.1", w))
        in_w = w
    keys["fc.weight"], keys["fc.bias"] = (c, widths[3]), (c,)
    return keys


NARROW, WIDE = (16, 16, 32, 64), (32, 64, 128, 256)
LAYOUTS = {
    "resnet18": lambda c: resnet_layout([2, 2, 2, 2], c),
    "resnet34": lambda c: resnet_layout([3, 4, 6, 3], c),
    "wrn16_1": lambda c: wrn_layout(16, 1, c),
    "wrn16_2": lambda c: wrn_layout(16, 2, c),
    "wrn40_1": lambda c: wrn_layout(40, 1, c),
    "wrn40_2": lambda c: wrn_layout(40, 2, c),
    "vgg8": lambda c: vgg_layout([[64], [128], [256], [512], [512]], c),
    "vgg11": lambda c: vgg_layout([[64], [128], [256, 256], [512, 512], [512, 512]], c),
    "vgg13": lambda c: vgg_layout([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], c),
    "resnet8": lambda c: tiny_layout(8, NARROW, c),
    "resnet20": lambda c: tiny_layout(20, NARROW, c),
    "resnet32": lambda c: tiny_layout(32, NARROW, c),
    "resnet56": lambda c: tiny_layout(56, NARROW, c),
    "resnet110": lambda c: tiny_layout(110, NARROW, c),
    "resnet8x4": lambda c: tiny_layout(8, WIDE, c),
    "resnet32x4": lambda c: tiny_layout(32, WIDE, c),
}

# (state_dict entries, BN layers, params C-10, params C-100), from the reference doc's tables (§4.2)
DOC_TOTALS = {
    "resnet18": (122, 20, 11_173_962, 11_220_132),
    "resnet34": (218, 36, 21_282_122, 21_328_292),
    "wrn40_2": (227, 37, 2_243_546, 2_255_156),
    "wrn40_1": (226, 37, 563_930, 569_780),
    "wrn16_2": (83, 13, 691_674, 703_284),
    "wrn16_1": (82, 13, 175_066, 180_916),
    "vgg11": (58, 8, 9_231_114, None),
}


def test_registry_covers_the_zoo():
    assert set(LAYOUTS) == set(CIFAR_MODELS)
    assert {"resnet18_imagenet", "resnet50_imagenet", "mobilenetv2_imagenet"} <= set(MODELS)


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_layout_matches_upstream(name, num_classes):
    model = create_model(name, num_classes)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = LAYOUTS[name](num_classes)
    assert sorted(set(expected) - set(actual)) == [], "missing keys"
    assert sorted(set(actual) - set(expected)) == [], "unexpected keys"
    assert actual == expected


@pytest.mark.parametrize("name", sorted(DOC_TOTALS))
def test_totals_match_reference_doc(name):
    entries, bn_layers, params10, params100 = DOC_TOTALS[name]
    model = create_model(name, 10)
    assert len(model.state_dict()) == entries
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bn_layers
    assert sum(p.numel() for p in model.parameters()) == params10
    if params100:
        assert sum(p.numel() for p in create_model(name, 100).parameters()) == params100


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_shapes_and_features(name, num_classes):
    model = create_model(name, num_classes).eval()
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, num_classes)
    logits2, features = model(x, return_features=True)
    assert torch.equal(logits, logits2)
    assert features.ndim == 2 and features.shape[0] == 2
    head = next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear))
    assert torch.allclose(head(features), logits, atol=1e-5)  # features are the head's input


def test_resnet_has_no_maxpool_and_reaches_4x4():
    model = create_model("resnet18").eval()
    sizes = []
    model.layer4.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    model(torch.randn(1, 3, 32, 32))
    assert sizes == [(4, 4)]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_wrn_shortcut_sees_activated_input():
    """§4.2: when widths differ, x is replaced by relu(bn1(x)) and the 1x1 shortcut acts on it."""
    block = create_model("wrn16_2").block2.layer[0].eval()
    x = torch.randn(2, 32, 8, 8)
    a = F.relu(block.bn1(x))
    expected = block.convShortcut(a) + block.conv2(F.relu(block.bn2(block.conv1(a))))
    assert torch.allclose(block(x), expected, atol=1e-6)
    same = create_model("wrn16_2").block2.layer[1].eval()  # equal widths: identity shortcut on raw x
    y = torch.randn(2, 64, 4, 4)
    expected = y + same.conv2(F.relu(same.bn2(same.conv1(F.relu(same.bn1(y))))))
    assert torch.allclose(same(y), expected, atol=1e-6)


def test_vgg_pool3_only_for_64px():
    model = create_model("vgg11").eval()
    calls = []
    model.pool3.register_forward_hook(lambda *a: calls.append(1))
    model(torch.randn(1, 3, 32, 32))
    assert calls == []
    model(torch.randn(1, 3, 64, 64))
    assert calls == [1]


def test_vgg_block_drops_last_relu():
    block = create_model("vgg11").block2
    assert [type(m).__name__ for m in block] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]


def test_imagenet_models_keep_torchvision_keys():
    import torchvision

    ours = create_model("resnet18_imagenet", 1000)
    theirs = torchvision.models.resnet18()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 64, 64)
    logits, features = ours(x, return_features=True)
    assert torch.allclose(logits, theirs(x), atol=1e-5) and features.shape == (1, 512)


def test_imagenet_weights_from_local_file(tmp_path):
    import torchvision

    path = tmp_path / "mobilenet_v2.pth"
    reference = torchvision.models.mobilenet_v2()
    torch.save(reference.state_dict(), path)
    model = create_model("mobilenetv2_imagenet", 1000, weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model(x), reference.eval()(x), atol=1e-5)


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="wrn40_2"):
        create_model("wrn40_3")
