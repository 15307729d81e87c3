import pickle

import numpy as np
import pytest
import torch
import torchvision

from fdk.data import batches, load_split, pack_split
from fdk.inputs import dataset_spec
from fdk.utils import FdkError
from tests.conftest import CIFAR10_CLASSES, write_class_folders


def test_dataset_spec_from_data_stats():
    info = dataset_spec("cifar10")
    assert info.num_classes == 10 and info.classes == tuple(CIFAR10_CLASSES)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2023, 0.1994, 0.2010)
    for name, classes in (("cifar100", 100), ("imagenet", 1000), ("nyuv2", 13), ("cifar_scenes", 11)):
        info = dataset_spec(name)
        assert info.num_classes == classes == len(info.classes) == len(set(info.classes))


def test_unknown_dataset():
    with pytest.raises(FdkError, match="known datasets: cifar10, cifar100, cifar_scenes, imagenet, nyuv2"):
        dataset_spec("mnist")


def test_class_folders_decode_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    arrays = write_class_folders(tmp_path / "cifar10", "train", CIFAR10_CLASSES, 3)
    data = load_split(tmp_path / "cifar10", "cifar10", "train")
    assert data.images.shape == (30, 3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.images, torch.from_numpy(arrays).permute(0, 3, 1, 2))
    assert data.labels.tolist() == [c for c in range(10) for _ in range(3)]
    # a data root that holds cifar10/ works too, and the second call reads the cache
    assert len(list((tmp_path / "cache").iterdir())) == 1
    again = load_split(tmp_path, "cifar10", "train")
    assert torch.equal(again.images, data.images)


def test_cache_notices_changed_files(tiny_cifar10):
    first = load_split(tiny_cifar10, "cifar10", "test")
    write_class_folders(tiny_cifar10, "test", CIFAR10_CLASSES, 2, seed=99)
    second = load_split(tiny_cifar10, "cifar10", "test")
    assert not torch.equal(first.images, second.images)


def test_packed_split_round_trip_in_parts(tiny_cifar10, tmp_path):
    data = load_split(tiny_cifar10, "cifar10", "train")  # 40 images of 3 KiB
    parts = pack_split(data, tmp_path / "packed" / "cifar10", "train", part_mib=15 * 3080 / 2**20)
    assert [p.name for p in parts] == [
        "train-part-00.safetensors",
        "train-part-01.safetensors",
        "train-part-02.safetensors",
    ]
    again = load_split(tmp_path / "packed", "cifar10", "train")  # found under <root>/<dataset>/ too
    assert torch.equal(again.images, data.images) and torch.equal(again.labels, data.labels)
    assert again.classes == data.classes
    parts[-1].unlink()
    with pytest.raises(FdkError, match="incomplete: 30 of 40 images"):
        load_split(tmp_path / "packed" / "cifar10", "cifar10", "train")


def test_missing_split_shows_expected_layout(tmp_path):
    with pytest.raises(FdkError) as info:
        load_split(tmp_path, "cifar10", "test")
    text = str(info.value)
    assert "test/<class>/<image>.png" in text and "cifar-10-batches-py" in text


def test_wrong_classes_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    write_class_folders(tmp_path, "test", ["airplane", "cats"], 1)
    with pytest.raises(FdkError, match=r"unexpected \['cats'\]"):
        load_split(tmp_path, "cifar10", "test")


def test_empty_class_folder(tmp_path):
    (tmp_path / "test" / "airplane").mkdir(parents=True)
    with pytest.raises(FdkError, match="holds no images"):
        load_split(tmp_path, "cifar10", "test")


def test_corrupt_image_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    write_class_folders(tmp_path, "test", CIFAR10_CLASSES, 1)
    (tmp_path / "test" / "bird" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(FdkError, match="bird/0000.png"):
        load_split(tmp_path, "cifar10", "test")


def test_torchvision_cifar_files(tmp_path, monkeypatch):
    """torchvision's pickled layout, generated small; only the md5 check is bypassed."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches_written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches_written[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    test = load_split(tmp_path, "cifar10", "test")
    data, labels = batches_written["test_batch"]
    assert torch.equal(test.images, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert test.labels.tolist() == labels and test.classes == tuple(CIFAR10_CLASSES)
    assert len(load_split(tmp_path, "cifar10", "train")) == 20


def test_download_failure_says_where_to_put_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(FdkError, match="no internet"):
        load_split(tmp_path, "cifar10", "test", download=True)


def test_batches_normalise_and_augment(tiny_cifar10):
    data = load_split(tiny_cifar10, "cifar10", "train")
    info = dataset_spec("cifar10")
    (x, y), *rest = list(batches(data, 16, info.mean, info.std))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and len(rest) == 2
    expected = (data.images[:16].float() / 255 - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(
        info.std
    ).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6) and torch.equal(y, data.labels[:16])
    shuffled = torch.cat([y for _, y in batches(data, 16, info.mean, info.std, shuffle=True, augment=True)])
    assert sorted(shuffled.tolist()) == sorted(data.labels.tolist())
    assert len(list(batches(data, 16, info.mean, info.std, drop_last=True))) == 2


@pytest.mark.data
@pytest.mark.parametrize("split,per_class", [("train", 5000), ("test", 1000)])
def test_real_cifar10(cifar10_root, split, per_class):
    data = load_split(cifar10_root, "cifar10", split)
    assert data.images.shape == (10 * per_class, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.bincount().tolist() == [per_class] * 10
    assert data.images.min() == 0 and data.images.max() == 255
    mean = data.images.float().mean((0, 2, 3)) / 255  # close to the recorded normalisation mean
    assert torch.allclose(mean, torch.tensor(dataset_spec("cifar10").mean), atol=0.01)
