"""ImageNet val (fdk's imagenet "test" split) and torchvision ImageNet teachers, on small generated files.

No real ImageNet here: 1000 wnid folders of one small JPEG each (three classes hold three) are written once
per module, and every layout points at them through symlinks, so each test reads or decodes at most once.
"""

import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from fdk import imagenet_data
from fdk.imagenet_data import (
    ARCHIVES,
    balanced_subset,
    eval_transform,
    expected_imagenet_layouts,
    find_imagenet_val,
    load_imagenet_val,
)
from fdk.inputs import dataset_spec
from fdk.jobs import load_teacher_for
from fdk.models import load_model
from fdk.models.imagenet import torchvision_weights_file
from fdk.presets import DistillConfig
from fdk.segdata import find_task_split, load_task_split
from fdk.utils import FdkError

WNIDS = [f"n{i:08d}" for i in range(1000)]
EXTRA = {0: 3, 1: 3, 2: 3}  # images in these classes; every other class has one
RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's IMAGENET1K_V1 (= DEFAULT) file name for resnet18


def torchvision_eval(path) -> np.ndarray:
    """The reference: ImageFolder's RGB loader, then Resize(256) + CenterCrop(224) from torchvision."""
    with Image.open(path) as image:
        pipeline = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
        return np.asarray(pipeline(image.convert("RGB")))


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    """Sorted wnid folders; class 5 is grayscale, class 6 CMYK, class 7 a portrait, the rest 300x260 RGB."""
    folder = tmp_path_factory.mktemp("imagenet_src") / "val"
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(WNIDS):
        (folder / wnid).mkdir(parents=True)
        for k in range(EXTRA.get(label, 1)):
            h, w = (333, 250) if label == 7 else (260, 300)
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            image = image.convert("L") if label == 5 else image.convert("CMYK") if label == 6 else image
            image.save(folder / wnid / f"ILSVRC2012_val_{label:05d}{k}.JPEG", quality=90)
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One FDK_CACHE for the module: layouts are symlinks to one folder, so their decodes share it."""
    path = tmp_path_factory.mktemp("fdk_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FDK_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def root(tmp_path_factory, val_folder):
    root = tmp_path_factory.mktemp("data")
    (root / "val").symlink_to(val_folder, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def full(root, cache_dir):
    return load_imagenet_val(root)


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("where", ["val", "imagenet/val", "ILSVRC2012/val"])
def test_found_in_each_folder_layout(tmp_path, val_folder, where):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).symlink_to(val_folder, target_is_directory=True)
    assert find_imagenet_val(tmp_path) == tmp_path / where
    (tmp_path / "meta.bin").touch()  # torchvision's parsed layout: val/ next to meta.bin reads the same
    assert find_imagenet_val(tmp_path) == tmp_path / where


@pytest.mark.parametrize("where", [".", "ILSVRC2012"])
def test_archives_are_unpacked_by_torchvision_once(tmp_path, val_folder, monkeypatch, where):
    base = tmp_path / where
    base.mkdir(exist_ok=True)
    for name in ARCHIVES:
        (base / name).touch()
    calls = []

    def fake_imagenet(path, split):  # what torchvision does: parse the two archives into <path>/val/<wnid>/
        calls.append((path, split))
        (tmp_path / where / "val").symlink_to(val_folder, target_is_directory=True)

    monkeypatch.setattr(torchvision.datasets, "ImageNet", fake_imagenet)
    assert find_imagenet_val(tmp_path) == base / "val"
    assert find_imagenet_val(tmp_path) == base / "val"  # the second time the folder is there
    assert calls == [(str(base), "val")]


def test_broken_archives_give_one_line_error(tmp_path, monkeypatch):
    for name in ARCHIVES:
        (tmp_path / name).touch()

    def corrupt(path, split):
        raise RuntimeError("The archive ILSVRC2012_img_val.tar is not present in the root directory or is corrupted.")

    monkeypatch.setattr(torchvision.datasets, "ImageNet", corrupt)
    with pytest.raises(FdkError, match=r"could not unpack .*corrupted\.\); re-download .*or unpack") as error:
        find_imagenet_val(tmp_path)
    one_line(error)


def test_shapes_dtypes_labels_and_classes(full, val_folder):
    assert full.images.shape == (1006, 3, 224, 224) and full.images.dtype == torch.uint8
    assert full.labels.dtype == torch.int64
    counts = torch.bincount(full.labels, minlength=1000)
    assert counts[:3].tolist() == [3, 3, 3] and bool((counts[3:] == 1).all())
    assert torch.equal(full.labels, full.labels.sort().values)  # class by class, wnid order
    assert full.classes == dataset_spec("imagenet").classes and full.classes[0] == "tench"
    first_of = {int(label): i for i, label in reversed(list(enumerate(full.labels)))}
    for label in (0, 5, 6, 7, 999):  # RGB, grayscale, CMYK, portrait, last class
        path = sorted((val_folder / WNIDS[label]).iterdir())[0]
        assert np.array_equal(full.images[first_of[label]].permute(1, 2, 0).numpy(), torchvision_eval(path))


@pytest.mark.parametrize("height,width", [(260, 300), (333, 250), (256, 256), (200, 201), (375, 500), (97, 611)])
def test_eval_transform_equals_torchvision_bit_for_bit(tmp_path, height, width):
    """Same PIL resize and the same crop offsets (torchvision's round half to even), so uint8-exact."""
    path = tmp_path / "x.JPEG"
    Image.fromarray(np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as image:
        ours = eval_transform(image)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, torchvision_eval(path))


def test_limit_is_class_balanced(root, cache_dir):
    files = [[f"{label}-{k}" for k in range(EXTRA.get(label, 1))] for label in range(1000)]
    picked = balanced_subset(files, 1000)
    assert [label for label, _ in picked] == list(range(1000))  # one image per class
    picked = balanced_subset(files, 1004)
    # 1000 firsts, seconds of classes 0, 1, 2, then the third of class 0; returned class by class
    assert [name for _, name in picked[:8]] == ["0-0", "0-1", "0-2", "1-0", "1-1", "2-0", "2-1", "3-0"]
    assert len(picked) == 1004 and picked[7] == (3, "3-0")
    assert len(balanced_subset(files, 10**6)) == 1006
    small = load_imagenet_val(root, limit=3, cache=False)
    assert small.images.shape == (3, 3, 224, 224) and small.labels.tolist() == [0, 1, 2]
    with pytest.raises(FdkError, match="limit must be a positive number of images, got 0; pass None") as error:
        load_imagenet_val(root, limit=0)
    one_line(error)


def test_cache_is_read_back(full, root, cache_dir):
    files = list(cache_dir.glob("imagenet-val-224-1006-*.pt"))
    assert len(files) == 1
    again = load_imagenet_val(root)
    assert torch.equal(again.images, full.images) and torch.equal(again.labels, full.labels)


def test_wrong_class_count_names_count_and_folder(tmp_path):
    for wnid in WNIDS[:3]:
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
    with pytest.raises(FdkError, match=r"found 3 class folders in .*imagenet/val, ImageNet has 1000; put") as error:
        load_imagenet_val(tmp_path)
    one_line(error)


def test_missing_split_lists_the_layouts(tmp_path):
    with pytest.raises(FdkError, match="no ImageNet val split found under") as error:
        load_imagenet_val(tmp_path)
    text = one_line(error)
    assert expected_imagenet_layouts(tmp_path) in text and "ILSVRC2012_devkit_t12.tar.gz" in text
    assert find_imagenet_val(tmp_path) is None and find_imagenet_val("") is None
    assert find_task_split(tmp_path, "imagenet", "test") is None and find_task_split("", "imagenet", "val") is None


def test_task_split_test_and_val_are_the_val_set(full, root, cache_dir, monkeypatch):
    decoded = []
    monkeypatch.setattr(imagenet_data, "_decode", lambda *args: decoded.append(args))  # the cache must serve it
    for split in ("test", "val"):
        data = load_task_split(root, "imagenet", split)
        assert torch.equal(data.images, full.images) and torch.equal(data.labels, full.labels)
    assert torch.equal(find_task_split(root, "imagenet", "test").labels, full.labels)
    assert decoded == []


@pytest.fixture
def resnet18_state():
    torch.manual_seed(1)
    model = torchvision.models.resnet18()
    with torch.no_grad():  # random BN statistics, so eval mode differs from an identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval(), model.state_dict()


def test_torchvision_resnet18_file_loads_with_the_same_logits(tmp_path, resnet18_state):
    reference, state = resnet18_state
    path = tmp_path / RESNET18_FILE
    torch.save(state, path)
    ours = load_model(path, "resnet18_imagenet")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))
    assert ours.source_file == str(path) and ours.input_spec is None


def test_torchvision_weights_file_cached_or_offline_error(tmp_path, monkeypatch):
    def offline(url, dst, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    message = (
        rf"could not download https://download.pytorch.org/models/{RESNET18_FILE} \(\[Errno -3\] Temporary failure "
        rf"in name resolution\); download it elsewhere and pass the file: --teacher path/to/{RESNET18_FILE}"
    )
    with pytest.raises(FdkError, match=message) as error:
        torchvision_weights_file("resnet18_imagenet", "IMAGENET1K_V1")
    one_line(error)
    cached = tmp_path / "checkpoints" / RESNET18_FILE
    cached.touch()  # already downloaded: no network
    assert torchvision_weights_file("resnet18_imagenet", "IMAGENET1K_V1") == cached
    assert torchvision_weights_file("resnet18_imagenet") == cached  # DEFAULT is IMAGENET1K_V1 for resnet18
    with pytest.raises(FdkError, match="torchvision has no ImageNet weights for 'resnet20'; use one of"):
        torchvision_weights_file("resnet20")
    with pytest.raises(FdkError, match=r"'IMAGENET9K' is neither a file nor a torchvision weights name.*IMAGENET1K_V1"):
        torchvision_weights_file("resnet18_imagenet", "IMAGENET9K")


def test_load_teacher_for_torchvision_name(tmp_path, monkeypatch, resnet18_state):
    def no_network(url, dst, **kwargs):
        raise AssertionError(f"downloaded {url} although the file is cached")

    reference, state = resnet18_state
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    cached = tmp_path / "checkpoints" / RESNET18_FILE
    cached.parent.mkdir()
    torch.save(state, cached)
    cfg = DistillConfig(dataset="imagenet", teacher="resnet18_imagenet", student="resnet18_imagenet")
    teacher = load_teacher_for(cfg, "torchvision:IMAGENET1K_V1")
    assert teacher.source_file == str(cached)  # what run.json records, so resume needs no network
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(teacher(x), reference(x))
    cifar = DistillConfig(dataset="cifar10", teacher="resnet20", student="resnet20")
    with pytest.raises(FdkError, match="names torchvision's ImageNet weights but the config's teacher is resnet20"):
        load_teacher_for(cifar, "torchvision:DEFAULT")
