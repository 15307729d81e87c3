"""Real-data feature statistics of a teacher, and scores of synthetic images against them.

`fdk stats` runs the teacher once over a real training split and stores the statistics of its
penultimate features (mean, covariance, per-class means) in `data_stats/`, keyed by the teacher file's
SHA-256. Later, without the dataset, a synthetic batch can be scored:

- Fréchet distance in the teacher's feature space (FID's formula, with the teacher instead of
  Inception): ||μ_r − μ_s||² + Tr(Σ_r + Σ_s − 2 (Σ_r^½ Σ_s Σ_r^½)^½). Lower is closer to real data.
  Like FID it is biased upwards for small batches: compare scores computed on equal sample counts.
- class coverage: the fraction of classes the teacher predicts at least once, and the entropy of the
  predicted-class histogram relative to uniform (1.0 = perfectly balanced).
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fdk.checkpoint import atomic_write, file_sha256, read_metadata
from fdk.data import ImageTensors, batches, load_split
from fdk.evaluate import normalized
from fdk.inputs import DATA_STATS, dataset_spec
from fdk.models import load_model
from fdk.utils import FdkError, resolve_device


@torch.no_grad()
def teacher_features(teacher, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), logits (N, C)) of normalised images, in eval mode."""
    teacher.eval()
    feats, logits = [], []
    for i in range(0, len(x), batch_size):
        out, f = teacher(x[i : i + batch_size], return_features=True)
        feats.append(f.float())
        logits.append(out.float())
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def feature_statistics(teacher, data: ImageTensors, mean, std, num_classes: int) -> dict[str, torch.Tensor]:
    """Mean (D,), covariance (D, D) and per-class means (C, D) of penultimate features, in float64."""
    device = next(teacher.parameters()).device
    data = data.to(device)
    teacher.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    s1 = s2 = class_sums = None
    class_counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    for x, y in batches(data, 500, mean, std):
        _, f = teacher(x, return_features=True)
        f = f.double()
        if s1 is None:
            s1 = torch.zeros(f.shape[1], dtype=torch.float64, device=device)
            s2 = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64, device=device)
            class_sums = torch.zeros(num_classes, f.shape[1], dtype=torch.float64, device=device)
        total += len(f)
        s1 += f.sum(0)
        s2 += f.T @ f
        class_sums.index_add_(0, y, f)
        class_counts += torch.bincount(y, minlength=num_classes).double()
    mu = s1 / total
    covariance = (s2 - total * torch.outer(mu, mu)) / (total - 1)
    return {
        "mean": mu.cpu(),
        "covariance": covariance.cpu(),
        "class_means": (class_sums / class_counts.clamp(min=1)[:, None]).cpu(),
        "class_counts": class_counts.cpu(),
    }


def stats_path(dataset: str, arch: str) -> Path:
    return DATA_STATS / f"{dataset}_{arch}_features.safetensors"


def save_statistics(stats: dict, path, **metadata) -> None:
    text = {k: json.dumps(v) for k, v in metadata.items()}
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in stats.items()}, tmp, metadata=text))


def load_statistics(path, teacher_file=None) -> tuple[dict[str, torch.Tensor], dict]:
    """The stored statistics and metadata; with teacher_file, check they belong to that teacher."""
    path = Path(path)
    if not path.exists():
        raise FdkError(f"no feature statistics at {path}; compute them with `fdk stats --teacher ... --data ...`")
    with safe_open(path, "pt") as f:
        stats = {k: f.get_tensor(k) for k in f.keys()}
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    if teacher_file is not None and meta.get("teacher_sha256") != file_sha256(teacher_file):
        raise FdkError(f"{path} was computed for another teacher (sha256 {meta.get('teacher_sha256')}); recompute")
    return stats, meta


def find_statistics(teacher) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The stored statistics of a teacher from `load_model`, or None when data_stats/ has none for that
    very file (they are keyed by its SHA-256: retrained weights need `fdk stats` again)."""
    source, spec, arch = (getattr(teacher, name, None) for name in ("source_file", "input_spec", "arch"))
    if source is None or spec is None or arch is None or not stats_path(spec.name, arch).exists():
        return None
    try:
        return load_statistics(stats_path(spec.name, arch), teacher_file=source)
    except FdkError:
        return None


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrtm_psd(sigma1)
    cross = _sqrtm_psd(root1 @ sigma2 @ root1)
    return float((mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * cross.trace())


def class_coverage(predictions: torch.Tensor, num_classes: int) -> dict:
    counts = torch.bincount(predictions.flatten().cpu(), minlength=num_classes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum() / torch.log(torch.tensor(float(num_classes)))
    return {
        "coverage": float((counts > 0).double().mean()),
        "balance": float(entropy),
        "counts": counts.long().tolist(),
    }


@torch.no_grad()
def score_images(teacher, images: torch.Tensor, stats: dict, mean, std) -> dict:
    """Score uint8 images: Fréchet distance to the real features, class coverage, mean confidence."""
    x = normalized(images, teacher, mean, std)
    features, logits = teacher_features(teacher, x)
    features = features.double().cpu()
    if len(features) < 2:
        raise FdkError("score at least 2 images (covariance needs them; use a few hundred for stable numbers)")
    mu = features.mean(0)
    sigma = torch.cov(features.T)
    probs = logits.softmax(1)
    num_classes = logits.shape[1]
    return {
        "frechet": frechet_distance(stats["mean"], stats["covariance"], mu, sigma),
        "n": len(features),
        "confidence": float(probs.max(1).values.mean()),
        **class_coverage(probs.argmax(1), num_classes),
    }


def compute_and_save(teacher_file, data_root, dataset="cifar10", split="train", arch=None, device="auto", path=None):
    """`fdk stats`: statistics of the teacher's features on a real split, written to data_stats/ (or path)."""
    device = resolve_device(device)
    info = dataset_spec(dataset)
    teacher = load_model(teacher_file, arch, info.num_classes).to(device)
    arch = arch or read_metadata(teacher_file)["arch"]  # load_model needs one of the two
    data = load_split(data_root, dataset, split)
    stats = feature_statistics(teacher, data, info.mean, info.std, info.num_classes)
    path = path or stats_path(dataset, arch)
    save_statistics(
        stats,
        path,
        dataset=dataset,
        split=split,
        arch=arch,
        images=len(data),
        teacher_file=Path(teacher_file).name,
        teacher_sha256=file_sha256(teacher_file),
    )
    return path, stats
