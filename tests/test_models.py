"""The zoo against the upstream layouts written down from the upstream layout notes (docs/method.md §10), not from code; the totals for
resnet50, mobilenetv2 and shufflenetv2 (absent from the doc) were measured from upstream's classes."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fdk.models import CIFAR_MODELS, MODELS, create_model
from fdk.utils import FdkError


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


def bottleneck_layout(blocks_per_stage, c):
    """DAFL resnet50: the resnet_layout stem and stages, but bottleneck blocks conv1 1x1 (w), conv2 3x3
    (w, carries the stride), conv3 1x1 (4w); every stage's first block (layer1's too: 64 -> 256) has a
    shortcut.{0,1}; head `linear` (C, 2048)."""
    keys = {"conv1.weight": (64, 3, 3, 3), **bn("bn1", 64)}
    in_w = 64
    for stage, (w, n) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
        for i in range(n):
            p = f"layer{stage}.{i}"
            keys[f"{p}.conv1.weight"] = (w, in_w if i == 0 else 4 * w, 1, 1)
            keys.update(bn(f"{p}.bn1", w))
            keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
            keys.update(bn(f"{p}.bn2", w))
            keys[f"{p}.conv3.weight"] = (4 * w, w, 1, 1)
            keys.update(bn(f"{p}.bn3", 4 * w))
            if i == 0:
                keys[f"{p}.shortcut.0.weight"] = (4 * w, in_w, 1, 1)
                keys.update(bn(f"{p}.shortcut.1", 4 * w))
        in_w = 4 * w
    keys["linear.weight"], keys["linear.bias"] = (c, 2048), (c,)
    return keys


def mobilenetv2_layout(c):
    """torchvision MobileNetV2 1.0: features.0 = [conv 3x3 3->32, BN]; then one features.{i}.conv per
    inverted residual: [expand 1x1 (absent when t=1) as {conv, BN}], depthwise 3x3 as {conv, BN}, then a
    bare 1x1 projection conv and its BN; features.18 = [1x1 320->1280, BN]; classifier.1 (C, 1280)."""
    keys = {"features.0.0.weight": (32, 3, 3, 3), **bn("features.0.1", 32)}
    i, in_w = 1, 32
    for t, w, n in [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]:
        for _ in range(n):
            p, h, j = f"features.{i}.conv", in_w * t, 0
            if t != 1:
                keys[f"{p}.0.0.weight"] = (h, in_w, 1, 1)
                keys.update(bn(f"{p}.0.1", h))
                j = 1
            keys[f"{p}.{j}.0.weight"] = (h, 1, 3, 3)
            keys.update(bn(f"{p}.{j}.1", h))
            keys[f"{p}.{j + 1}.weight"] = (w, h, 1, 1)
            keys.update(bn(f"{p}.{j + 2}", w))
            i, in_w = i + 1, w
    keys[f"features.{i}.0.weight"] = (1280, 320, 1, 1)
    keys.update(bn(f"features.{i}.1", 1280))
    keys["classifier.1.weight"], keys["classifier.1.bias"] = (c, 1280), (c,)
    return keys


def shufflenetv2_layout(c):
    """RepDistiller ShuffleNetV2 1x: conv1 1x1 3->24; layer{s}.0 a down block (conv1 dw 3x3 on the input,
    conv2/conv3 1x1 to w/2, conv4 dw 3x3, conv5 1x1, each with its bn), then 3/7/3 basic blocks on w/2
    channels (conv1 1x1, conv2 dw 3x3, conv3 1x1); widths 116/232/464; conv2 1x1 464->1024, bn2; linear."""
    keys = {"conv1.weight": (24, 3, 1, 1), **bn("bn1", 24)}
    in_w = 24
    for stage, (w, n) in enumerate(zip((116, 232, 464), (3, 7, 3)), start=1):
        m, p = w // 2, f"layer{stage}.0"
        for name, shape in [
            ("1", (in_w, 1, 3, 3)),
            ("2", (m, in_w, 1, 1)),
            ("3", (m, in_w, 1, 1)),
            ("4", (m, 1, 3, 3)),
            ("5", (m, m, 1, 1)),
        ]:
            keys[f"{p}.conv{name}.weight"] = shape
            keys.update(bn(f"{p}.bn{name}", shape[0]))
        for i in range(1, n + 1):
            for name, shape in [("1", (m, m, 1, 1)), ("2", (m, 1, 3, 3)), ("3", (m, m, 1, 1))]:
                keys[f"layer{stage}.{i}.conv{name}.weight"] = shape
                keys.update(bn(f"layer{stage}.{i}.bn{name}", m))
        in_w = w
    keys["conv2.weight"] = (1024, 464, 1, 1)
    keys.update(bn("bn2", 1024))
    keys["linear.weight"], keys["linear.bias"] = (c, 1024), (c,)
    return keys


NARROW, WIDE = (16, 16, 32, 64), (32, 64, 128, 256)
LAYOUTS = {
    "resnet18": lambda c: resnet_layout([2, 2, 2, 2], c),
    "resnet34": lambda c: resnet_layout([3, 4, 6, 3], c),
    "resnet50": lambda c: bottleneck_layout([3, 4, 6, 3], c),
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
    "mobilenetv2": lambda c: mobilenetv2_layout(c),
    "shufflenetv2": lambda c: shufflenetv2_layout(c),
}

# (state_dict entries, BN layers, params C-10, params C-100), from the upstream layout tables (docs/method.md §10)
DOC_TOTALS = {
    "resnet18": (122, 20, 11_173_962, 11_220_132),
    "resnet34": (218, 36, 21_282_122, 21_328_292),
    "wrn40_2": (227, 37, 2_243_546, 2_255_156),
    "wrn40_1": (226, 37, 563_930, 569_780),
    "wrn16_2": (83, 13, 691_674, 703_284),
    "wrn16_1": (82, 13, 175_066, 180_916),
    "vgg11": (58, 8, 9_231_114, None),
}

# (state_dict entries, BN layers, params C-10, params C-100), measured by instantiating upstream's classes
# (registry.MODEL_DICT: classifiers.resnet.resnet50, classifiers.mobilenetv2.mobilenet_v2(num_classes=C),
# classifiers.shufflenetv2.shuffle_v2) of zju-vipa/Fast-Datafree at commit 0dcecbc178b87048bedf730acb577045b3c0b57a
UPSTREAM_MEASURED = {
    "resnet50": (320, 53, 23_520_842, 23_705_252),
    "mobilenetv2": (314, 52, 2_236_682, 2_351_972),
    "shufflenetv2": (338, 56, 1_263_278, 1_355_528),
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


@pytest.mark.parametrize("name", sorted(UPSTREAM_MEASURED))
def test_totals_match_upstream_measurements(name):
    entries, bn_layers, params10, params100 = UPSTREAM_MEASURED[name]
    model = create_model(name, 10)
    assert len(model.state_dict()) == entries
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bn_layers
    assert sum(p.numel() for p in model.parameters()) == params10
    model100 = create_model(name, 100)
    assert len(model100.state_dict()) == entries
    assert sum(p.numel() for p in model100.parameters()) == params100


LANDMARKS = {  # keys that pin the layout down: stem, first block, a shortcut / down block, last conv, head
    "resnet50": {
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.shortcut.0.weight": (256, 64, 1, 1),
        "layer3.0.shortcut.1.running_var": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "linear.weight": (100, 2048),
    },
    "mobilenetv2": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (100, 1280),
    },
    "shufflenetv2": {
        "conv1.weight": (24, 3, 1, 1),
        "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer1.0.conv5.weight": (58, 58, 1, 1),
        "layer1.3.conv2.weight": (58, 1, 3, 3),
        "layer2.7.conv3.weight": (116, 116, 1, 1),
        "layer3.0.bn4.running_mean": (232,),
        "conv2.weight": (1024, 464, 1, 1),
        "linear.weight": (100, 1024),
    },
}
ABSENT = {
    "resnet50": ["layer1.1.shortcut.0.weight", "fc.weight"],
    "mobilenetv2": ["features.19.0.weight", "classifier.0.weight", "features.1.conv.3.weight"],
    "shufflenetv2": ["layer1.4.conv1.weight", "layer2.8.conv1.weight", "layer3.4.conv1.weight", "bn3.weight"],
}


@pytest.mark.parametrize("name", sorted(LANDMARKS))
def test_new_models_landmark_keys(name):
    state = create_model(name, 100).state_dict()
    assert {k: tuple(state[k].shape) for k in LANDMARKS[name] if k in state} == LANDMARKS[name]
    assert [k for k in ABSENT[name] if k in state] == []


@pytest.mark.parametrize(
    "name, feature_dim, hooked, spatial",
    [
        ("resnet50", 2048, "layer4", (4, 4)),  # stride-1 stem, no max-pool
        ("mobilenetv2", 1280, "features", (1, 1)),  # ImageNet strides: total stride 32
        ("shufflenetv2", 1024, "layer3", (4, 4)),  # 1x1 stride-1 stem, three stride-2 down blocks
    ],
)
def test_new_models_forward_and_features(name, feature_dim, hooked, spatial):
    model = create_model(name, 10).eval()
    sizes = []
    getattr(model, hooked).register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        out = model(x, return_features=True)
    assert logits.shape == (2, 10)
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.equal(out[0], logits) and out[1].shape == (2, feature_dim)
    assert sizes == [spatial, spatial]


def test_mobilenetv2_stem_has_stride_2_and_dropout_head():
    model = create_model("mobilenetv2")
    assert model.features[0][0].stride == (2, 2)
    assert [type(m).__name__ for m in model.classifier] == ["Dropout", "Linear"]
    assert model.classifier[0].p == 0.2
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 35  # stem, 17 blocks (1 + 2 * 16), last 1x1


def test_mobilenetv2_loads_torchvision_weights():
    """Upstream's mobilenetv2.py is torchvision's MobileNetV2: its weights load strictly, logits agree."""
    import torchvision

    theirs = torchvision.models.mobilenet_v2(num_classes=10).eval()
    ours = create_model("mobilenetv2", 10).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_shufflenetv2_basic_block_keeps_first_half_and_shuffles():
    """The first half of the channels passes through untouched and lands on the even channels."""
    block = create_model("shufflenetv2").layer1[1].eval()
    x = torch.randn(2, 116, 8, 8)
    with torch.no_grad():
        out = block(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0::2], x[:, :58])


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
    with pytest.raises(FdkError, match="'wrn40_3' is not a zoo architecture; choose one of: .*wrn40_2"):
        create_model("wrn40_3")
