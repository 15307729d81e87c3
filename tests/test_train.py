import dataclasses

import torch

from fdk.checkpoint import load_checkpoint
from fdk.models import load_model
from fdk.train import TeacherConfig, learning_rate, train_teacher

CFG = TeacherConfig(arch="resnet8", epochs=3, batch_size=8, lr=0.05)


def test_schedule_warms_up_then_decays_to_zero():
    cfg = dataclasses.replace(CFG, epochs=10, warmup_epochs=1, lr=0.2)
    lrs = [learning_rate(cfg, s, 100) for s in range(1000)]
    assert lrs[0] == 0.2 / 100 and abs(lrs[99] - 0.2) < 1e-12
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))  # monotone cosine decay
    assert lrs[-1] < 1e-4


def test_resume_ends_with_the_same_weights(tiny_cifar10, tmp_path):
    train_teacher(CFG, tiny_cifar10, tmp_path / "full", "cpu", progress=False)
    train_teacher(CFG, tiny_cifar10, tmp_path / "cut", "cpu", progress=False, on_epoch=lambda r: r["epoch"] >= 0)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 0
    train_teacher(CFG, tiny_cifar10, tmp_path / "cut", "cpu", resume=True, progress=False)
    full = load_model(tmp_path / "full" / "model.safetensors").state_dict()
    cut = load_model(tmp_path / "cut" / "model.safetensors").state_dict()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    epochs = [
        r["epoch"]
        for r in map(eval_json, (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines())
        if "epoch" in r
    ]
    assert epochs == [0, 1, 2]  # the log continues without duplicates


def eval_json(line):
    import json

    return json.loads(line)


def test_training_learns_a_separable_toy_problem(tmp_path, monkeypatch):
    """Ten classes that differ only in brightness: a short run must beat chance (10%) clearly."""
    from PIL import Image

    from tests.conftest import CIFAR10_CLASSES

    monkeypatch.setenv("FDK_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 20), ("test", 5)):
        for label, name in enumerate(CIFAR10_CLASSES):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-4, 5, (32, 32, 3), generator=g)
                pixels = (20 + 24 * label + noise).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    cfg = dataclasses.replace(CFG, epochs=6, batch_size=20, lr=0.05)
    metrics = train_teacher(cfg, tmp_path / "data", tmp_path / "run", "cpu", progress=False)
    assert metrics["top1"] >= 50
