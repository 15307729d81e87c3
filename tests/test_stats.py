import numpy as np
import pytest
import torch

from fdk.checkpoint import save_weights
from fdk.data import load_split
from fdk.inputs import dataset_spec
from fdk.models import create_model
from fdk.stats import (
    class_coverage,
    compute_and_save,
    feature_statistics,
    frechet_distance,
    load_statistics,
    score_images,
)
from fdk.utils import FdkError


def test_frechet_distance_matches_closed_forms():
    d = 5
    mu1, mu2 = torch.zeros(d), torch.arange(d, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    assert frechet_distance(mu1, eye, mu1, eye) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(mu1, eye, mu2, eye) == pytest.approx(float((mu2**2).sum()))
    # N(0, a I) vs N(0, b I): d (sqrt(a) - sqrt(b))^2
    assert frechet_distance(mu1, 4 * eye, mu1, eye) == pytest.approx(d * (2 - 1) ** 2)
    # against scipy on random SPD matrices
    scipy = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    ref = np.trace(s1 + s2 - 2 * scipy.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, torch.tensor(s1), mu1, torch.tensor(s2)) == pytest.approx(ref, rel=1e-6)


def test_class_coverage():
    out = class_coverage(torch.tensor([0, 0, 1, 1]), 4)
    assert out["coverage"] == 0.5 and out["counts"] == [2, 2, 0, 0]
    assert out["balance"] == pytest.approx(0.5)  # log 2 / log 4
    assert class_coverage(torch.arange(10), 10)["balance"] == pytest.approx(1.0)


def test_statistics_equal_a_direct_computation(tiny_cifar10):
    info = dataset_spec("cifar10")
    data = load_split(tiny_cifar10, "cifar10", "train")
    teacher = create_model("resnet8").eval()
    stats = feature_statistics(teacher, data, info.mean, info.std, 10)
    x = (data.images.float() / 255 - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        _, f = teacher(x, return_features=True)
    f = f.double()
    assert torch.allclose(stats["mean"], f.mean(0), atol=1e-5)
    assert torch.allclose(stats["covariance"], torch.cov(f.T), atol=1e-5)
    assert torch.allclose(stats["class_means"][3], f[data.labels == 3].mean(0), atol=1e-5)


def test_stats_file_round_trip_and_teacher_check(tiny_cifar10, tmp_path, monkeypatch):
    import fdk.stats

    monkeypatch.setattr(fdk.stats, "DATA_STATS", tmp_path / "stats")
    teacher_file = tmp_path / "t.safetensors"
    save_weights(create_model("resnet8").state_dict(), teacher_file, arch="resnet8", num_classes=10, dataset="cifar10")
    path, stats = compute_and_save(teacher_file, tiny_cifar10, device="cpu")
    assert path == tmp_path / "stats" / "cifar10_resnet8_features.safetensors"
    loaded, meta = load_statistics(path, teacher_file)
    assert meta["images"] == 40 and meta["arch"] == "resnet8"
    assert torch.equal(loaded["covariance"], stats["covariance"])
    other = tmp_path / "other.safetensors"
    save_weights(create_model("resnet8").state_dict(), other, arch="resnet8", num_classes=10)
    with pytest.raises(FdkError, match="another teacher"):
        load_statistics(path, other)


def test_real_images_score_closer_than_noise(tiny_cifar10):
    """Real images from the split the statistics came from beat uniform noise."""
    info = dataset_spec("cifar10")
    data = load_split(tiny_cifar10, "cifar10", "train")
    teacher = create_model("resnet8").eval()
    stats = feature_statistics(teacher, data, info.mean, info.std, 10)
    real = score_images(teacher, data.images, stats, info.mean, info.std)
    noise = score_images(teacher, torch.full_like(data.images, 128), stats, info.mean, info.std)
    assert real["frechet"] < noise["frechet"]
    assert real["n"] == 40 and 0 < real["coverage"] <= 1
