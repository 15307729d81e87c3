"""Segmentation data: NYUv2 in both layouts, synchronised crop + flip, and the CIFAR scenes (docs/method.md §12)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fdk.data import ImageTensors, load_split
from fdk.inputs import dataset_spec
from fdk.scenes import SCENE_CLASSES, SCENE_COUNTS, make_scenes, scenes_split
from fdk.segdata import SegTensors, load_nyuv2, load_seg_split, resized_shape, seg_batches
from fdk.utils import FdkError
from tests.conftest import CIFAR10_CLASSES, REPO

TRAIN = [3, 1, 5, 7, 2, 9]  # 1-based indices into the DFAD image folder, in splits.mat order
TEST = [4, 6, 8, 10]


def nyu_arrays(count: int, seed: int = 0, h: int = 48, w: int = 64):
    """Random RGB images and raw DFAD labels (0 = unlabeled, 1..13)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8), rng.integers(0, 14, (count, h, w), dtype=np.uint8)


def remap(raw: np.ndarray) -> np.ndarray:
    return np.where(raw == 0, 255, raw - 1).astype(np.uint8)


def write_vainf(base, split: str, images, labels):
    """VainF's layout; names sort in the given order."""
    for folder in ("image", "seg13"):
        (base / folder / split).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(base / "image" / split / f"{i:03d}.png")
        Image.fromarray(label).save(base / "seg13" / split / f"{i:03d}.png")


def write_dfad(base, images, raw_labels):
    """DFAD's layout for images 1..10 split as TRAIN / TEST; images[k], raw_labels[k] belong to index k + 1."""
    from scipy.io import savemat

    (base / "480_640" / "IMAGE").mkdir(parents=True)
    (base / "nyuv2-meta-data").mkdir(parents=True)
    savemat(base / "nyuv2-meta-data" / "splits.mat", {"trainNdxs": np.array(TRAIN)[:, None], "testNdxs": TEST})
    for split, indices in (("train", TRAIN), ("test", TEST)):
        folder = base / "nyuv2-meta-data" / f"{split}_labels_13"
        folder.mkdir()
        for i in indices:
            Image.fromarray(raw_labels[i - 1]).save(folder / f"new_nyu_class13_{i:04d}.png")
    for i, image in enumerate(images, start=1):
        Image.fromarray(image).save(base / "480_640" / "IMAGE" / f"{i - 1}.png")


@pytest.fixture
def nyu_roots(tmp_path, monkeypatch):
    """The same 10 images and labels in both layouts: (vainf root, dfad root, images, raw labels)."""
    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    images, raw = nyu_arrays(10)
    vainf, dfad = tmp_path / "vainf", tmp_path / "dfad"
    for split, indices in (("train", TRAIN), ("test", TEST)):
        picked = [i - 1 for i in indices]
        write_vainf(vainf / "NYUv2", split, images[picked], remap(raw[picked]))
    write_dfad(dfad / "NYUv2", images, raw)
    return vainf, dfad, images, raw


def test_both_nyu_layouts_load_the_same_split(nyu_roots):
    vainf, dfad, _, _ = nyu_roots
    for split, count in (("train", 6), ("test", 4)):
        a = load_nyuv2(vainf, split, size=32, cache=False)
        b = load_nyuv2(dfad / "NYUv2", split, size=32, cache=False)  # root may be the NYUv2 folder itself
        assert isinstance(a, SegTensors) and len(a) == count
        assert a.images.shape == (count, 3, 32, 42) and a.images.dtype == torch.uint8  # shorter side 48 -> 32
        assert a.masks.shape == (count, 32, 42) and a.masks.dtype == torch.uint8
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
        assert a.classes == dataset_spec("nyuv2").classes
    assert resized_shape(480, 640, 256) == (256, 341)  # torchvision's Resize(256) on NYUv2's 480 x 640
    assert resized_shape(64, 48, 32) == (42, 32)


def test_dfad_labels_map_unlabeled_to_255_and_k_to_k_minus_1(nyu_roots):
    _, dfad, images, raw = nyu_roots
    hand = np.zeros((48, 64), dtype=np.uint8)
    hand[0, :5] = [0, 1, 2, 13, 7]
    Image.fromarray(hand).save(dfad / "NYUv2" / "nyuv2-meta-data" / "train_labels_13" / "new_nyu_class13_0003.png")
    data = load_nyuv2(dfad, "train", size=48, cache=False)  # no resize: the first listed index is 3
    assert data.masks[0, 0, :5].tolist() == [255, 0, 1, 12, 6]
    assert (data.masks[0, 1:] == 255).all()
    assert torch.equal(data.masks[1], torch.from_numpy(remap(raw[0])))  # index 1, second in trainNdxs
    assert torch.equal(data.images[1].permute(1, 2, 0), torch.from_numpy(images[0]))


def test_nearest_resize_never_invents_label_values(tmp_path):
    images, _ = nyu_arrays(3, seed=4)
    rng = np.random.default_rng(5)
    labels = rng.choice(np.array([0, 3, 7, 255], dtype=np.uint8), size=(3, 48, 64))
    write_vainf(tmp_path, "test", images, labels)
    for size in (32, 37, 100):
        values = set(load_nyuv2(tmp_path, "test", size=size, cache=False).masks.unique().tolist())
        assert values <= {0, 3, 7, 255} and len(values) == 4


def one_line_error(call) -> str:
    with pytest.raises(FdkError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_nyu_names_both_layouts(tmp_path):
    message = one_line_error(lambda: load_nyuv2(tmp_path / "nowhere", "train"))
    assert "image/<split>/*.png" in message and "seg13/<split>" in message
    assert "480_640/IMAGE" in message and "splits.mat" in message and "new_nyu_class13" in message
    assert "'val'" in one_line_error(lambda: load_nyuv2(tmp_path, "val"))


def test_malformed_nyu_files_are_one_line_errors(nyu_roots):
    vainf, dfad, _, _ = nyu_roots
    base = vainf / "NYUv2"
    (base / "seg13" / "train" / "002.png").unlink()
    message = one_line_error(lambda: load_nyuv2(vainf, "train", size=32, cache=False))
    assert "6 images" in message and "5 labels" in message and "002.png" in message

    Image.fromarray(np.full((48, 64), 20, dtype=np.uint8)).save(base / "seg13" / "test" / "001.png")
    message = one_line_error(lambda: load_nyuv2(vainf, "test", size=32, cache=False))
    assert "[20]" in message and "0..12 and 255" in message

    Image.fromarray(np.zeros((40, 64), dtype=np.uint8)).save(base / "seg13" / "test" / "001.png")
    assert "(40, 64)" in one_line_error(lambda: load_nyuv2(vainf, "test", size=32, cache=False))

    (dfad / "NYUv2" / "480_640" / "IMAGE" / "6.png").unlink()  # index 7 of the train split
    assert "6.png" in one_line_error(lambda: load_nyuv2(dfad, "train", size=32, cache=False))
    Image.fromarray(np.full((48, 64), 14, dtype=np.uint8)).save(
        dfad / "NYUv2" / "nyuv2-meta-data" / "test_labels_13" / "new_nyu_class13_0004.png"
    )
    assert "[14]" in one_line_error(lambda: load_nyuv2(dfad, "test", size=32, cache=False))


def test_nyu_split_is_cached_and_refreshed_on_change(nyu_roots):
    vainf, _, _, _ = nyu_roots
    first = load_nyuv2(vainf, "test", size=32)
    assert torch.equal(load_nyuv2(vainf, "test", size=32).masks, first.masks)  # from the cache
    Image.fromarray(np.full((48, 64), 4, dtype=np.uint8)).save(vainf / "NYUv2" / "seg13" / "test" / "000.png")
    assert (load_nyuv2(vainf, "test", size=32).masks[0] == 4).all()
    assert len(load_seg_split(vainf, "nyuv2", "test")) == 4
    assert "unknown segmentation dataset" in one_line_error(lambda: load_seg_split(vainf, "nyu", "test"))


def coded_split(count: int = 16, h: int = 40, w: int = 56, seed: int = 0) -> SegTensors:
    """Images whose pixels encode their label (red), row (green) and column (blue)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 13, (count, h, w), generator=g, dtype=torch.uint8)
    masks[:, ::7, ::5] = 255
    rows = torch.arange(h, dtype=torch.uint8).view(1, h, 1).expand(count, h, w)
    cols = torch.arange(w, dtype=torch.uint8).view(1, 1, w).expand(count, h, w)
    return SegTensors(torch.stack([masks, rows, cols], 1).contiguous(), masks, ("c",) * 13)


def test_seg_batches_crop_and_flip_keep_image_and_mask_aligned():
    data = coded_split()
    g = torch.Generator().manual_seed(3)
    flipped = 0
    for x, y in seg_batches(data, 5, (0, 0, 0), (1, 1, 1), shuffle=True, augment=True, crop=24, generator=g):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (3, 24, 24) and y.shape[1:] == (24, 24)
        pixels = (x * 255).round().long()
        assert torch.equal(pixels[:, 0], y)  # the label travelled with its pixel
        rows, cols = pixels[:, 1], pixels[:, 2]
        assert (rows.diff(dim=1) == 1).all() and (rows.diff(dim=2) == 0).all()  # a crop: contiguous rows
        step = cols.diff(dim=2)[:, 0, 0]
        assert ((step == 1) | (step == -1)).all() and (cols.diff(dim=2) == step.view(-1, 1, 1)).all()
        flipped += int((step == -1).sum())
    assert 0 < flipped < len(data)

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        return [y for _, y in seg_batches(data, 4, (0.5,) * 3, (0.5,) * 3, True, True, (16, 20), True, g)]

    assert all(torch.equal(a, b) for a, b in zip(epoch(1), epoch(1)))
    assert epoch(1)[0].shape == (4, 16, 20) and not all(torch.equal(a, b) for a, b in zip(epoch(1), epoch(2)))
    flip_only = next(seg_batches(data, 16, (0,) * 3, (1,) * 3, augment=True, generator=g))[0]  # crop None
    assert flip_only.shape == (16, 3, 40, 56)
    with pytest.raises(FdkError, match="larger than the images"):
        next(seg_batches(data, 4, (0,) * 3, (1,) * 3, augment=True, crop=48))


def test_seg_batches_without_augment_are_the_full_split():
    data = coded_split(count=10)
    out = list(seg_batches(data, 4, (0.5,) * 3, (0.25,) * 3, shuffle=True))
    assert [len(y) for _, y in out] == [4, 4, 2]
    x = torch.cat([x for x, _ in out])
    y = torch.cat([y for _, y in out])
    assert torch.allclose(x[:, 0] * 0.25 + 0.5, y.float() / 255)  # still aligned, not cropped
    assert sorted(map(tuple, y.flatten(1).tolist())) == sorted(map(tuple, data.masks.long().flatten(1).tolist()))
    assert [len(y) for _, y in seg_batches(data, 4, (0,) * 3, (1,) * 3, drop_last=True)] == [4, 4]


@pytest.fixture
def tiny_train(tiny_cifar10) -> ImageTensors:
    return load_split(tiny_cifar10, "cifar10", "train")


def test_scenes_are_deterministic_from_the_seed(tiny_train, monkeypatch):
    a = make_scenes(tiny_train, 12, size=48, seed=0)
    assert torch.equal(a.images, make_scenes(tiny_train, 12, size=48, seed=0).images)
    monkeypatch.setattr("fdk.scenes.CHUNK", 5)  # composing in other chunks changes nothing
    b = make_scenes(tiny_train, 12, size=48, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    c = make_scenes(tiny_train, 12, size=48, seed=1)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.masks, c.masks)
    assert a.images.shape == (12, 3, 48, 48) and a.masks.shape == (12, 48, 48) and a.masks.dtype == torch.uint8
    assert a.classes == SCENE_CLASSES == dataset_spec("cifar_scenes").classes


def is_rectangle(region: torch.Tensor) -> bool:
    rows, cols = region.any(1).nonzero(), region.any(0).nonzero()
    box = region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return bool(box.all())


def test_scenes_hold_several_irregular_objects_of_varied_size(tiny_train):
    scenes = make_scenes(tiny_train, 50, seed=2)
    masks = scenes.masks
    assert int(masks.max()) <= 10
    labelled = [sorted(set(m.unique().tolist()) - {0}) for m in masks]
    assert sum(len(found) >= 2 for found in labelled) >= 35  # 2..4 objects, some of one class or hidden
    fractions = torch.tensor([float((m == c).float().mean()) for m, found in zip(masks, labelled) for c in found])
    assert fractions.std() > 0.03 and fractions.max() > 2 * fractions.min()
    centres = torch.tensor(
        [[float(i.float().mean()) for i in (m == c).nonzero().T] for m, found in zip(masks, labelled) for c in found]
    )
    assert (centres.std(0) > 5).all()  # objects move around the 64 px canvas
    regions = [(m == c) for m, found in zip(masks, labelled) for c in found]
    assert sum(not is_rectangle(r) for r in regions) > 0.8 * len(regions)
    background = (masks == 0).float().mean()
    assert 0.3 < background < 0.9


def pixel_codes(images: torch.Tensor) -> torch.Tensor:
    """One integer per RGB triple, (N, H, W)."""
    images = images.long()
    return images[:, 0] * 65536 + images[:, 1] * 256 + images[:, 2]


def test_object_pixels_are_their_class_source_pixels(tiny_train):
    scenes = make_scenes(tiny_train, 30, seed=3)
    codes, sources = pixel_codes(scenes.images), pixel_codes(tiny_train.images)
    for label in range(1, 11):
        where = scenes.masks == label
        if where.any():  # the random-noise sources make every triple (almost) unique to one image
            assert torch.isin(codes[where], sources[tiny_train.labels == label - 1]).all()
            others = torch.isin(codes[where], sources[tiny_train.labels != label - 1]).float().mean()
            assert others < 0.01
    background = codes[scenes.masks == 0]
    assert torch.isin(background, sources).float().mean() < 0.05  # blurred, not pasted


def write_plain_split(root, split: str, colour):
    for name in CIFAR10_CLASSES:
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), colour, dtype=np.uint8)).save(folder / f"{i}.png")


def test_scenes_use_only_their_own_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    write_plain_split(tmp_path / "cifar10", "train", (10, 20, 30))
    write_plain_split(tmp_path / "cifar10", "test", (200, 100, 50))
    for split, colour in (("train", (10, 20, 30)), ("test", (200, 100, 50))):
        scenes = scenes_split(tmp_path, split, count=6, size=32)
        assert torch.equal(
            scenes.images, torch.tensor(colour, dtype=torch.uint8).view(1, 3, 1, 1).expand_as(scenes.images)
        )
        assert (scenes.masks > 0).any()
    assert "'val'" in one_line_error(lambda: scenes_split(tmp_path, "val"))
    assert "objects" in one_line_error(lambda: make_scenes(load_split(tmp_path, split="test"), 2, objects=(3, 2)))


def test_cifar_scenes_stats_file_matches_the_code():
    raw = json.loads((REPO / "data_stats" / "cifar_scenes.json").read_text())
    cifar = json.loads((REPO / "data_stats" / "cifar10.json").read_text())
    assert raw["splits"] == SCENE_COUNTS and raw["num_classes"] == len(SCENE_CLASSES) == 11
    assert raw["mean"] == cifar["mean"] and raw["std"] == cifar["std"] and raw["image_size"] == 64
    assert dataset_spec("cifar_scenes").dense
