import os
import traceback

import torch

from fdk.augment import crop_flip, quantize, random_crop, random_hflip, to_unit


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.rand(64, 3, 8, 8)
    out = random_crop(x, padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):  # each output equals exactly one of the 25 windows
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    offsets = {(out[i] == x[i]).all().item() for i in range(64)}
    assert offsets == {True, False}  # some samples moved, some did not


def test_crop_and_flip_are_differentiable():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    crop_flip(x, 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_flip_flips_about_half():
    x = torch.arange(8.0).view(1, 1, 1, 8).repeat(1000, 1, 1, 1)
    flipped = (random_hflip(x)[:, 0, 0, 0] == 7).float().mean()
    assert 0.4 < flipped < 0.6


def test_quantize_floors_like_the_upstream_png_writer():
    x = torch.tensor([0.0, 0.5, 0.99999, 1.0, 1.5, -0.2])
    assert quantize(x).tolist() == [0, 127, 254, 255, 255, 0]
    assert torch.equal(quantize(to_unit(torch.arange(256, dtype=torch.uint8))), torch.arange(256, dtype=torch.uint8))


def test_random_resized_crop_boxes_follow_scale_and_ratio():
    """Each output is a crop whose area fraction lies in `scale` and aspect ratio in `ratio`: read them
    off an input whose pixels hold their own (x, y) coordinates."""
    from fdk.augment import random_resized_crop_flip

    torch.manual_seed(0)
    n, size = 64, 32
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 200), torch.linspace(0, 1, 200), indexing="ij")
    coords = torch.stack([xs, ys, torch.zeros_like(xs)])[None].repeat(n, 1, 1, 1)
    out = random_resized_crop_flip(coords, size, scale=(0.3, 0.6), ratio=(3 / 4, 4 / 3), p_flip=0.5)
    width = (out[:, 0, :, -1] - out[:, 0, :, 0]).abs().mean(1) * size / (size - 1)  # x span across the crop
    height = (out[:, 1, -1, :] - out[:, 1, 0, :]).mean(1) * size / (size - 1)
    area, aspect = width * height, width / height
    assert area.min() > 0.3 - 0.03 and area.max() < 0.6 + 0.03
    assert aspect.min() > 3 / 4 - 0.05 and aspect.max() < 4 / 3 + 0.05
    flipped = out[:, 0, 0, -1] < out[:, 0, 0, 0]  # x decreases left to right
    assert 0 < flipped.sum() < n  # some flipped, some not


def test_random_resized_crop_whole_image_is_identity_and_gradients_flow():
    from fdk.augment import random_resized_crop_flip

    x = torch.rand(3, 3, 16, 16, requires_grad=True)
    same = random_resized_crop_flip(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), p_flip=0.0)
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5)
    mirrored = random_resized_crop_flip(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), p_flip=1.0)
    torch.testing.assert_close(mirrored, x.flip(3), rtol=0, atol=1e-5)
    mirrored.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_no_tensor_is_made_from_python_values_inside_a_step(monkeypatch):
    """A KD step, a synthesis call (its inner steps) and a teacher-training step build no tensor from Python
    values once warm: on a GPU each such tensor is a host-to-device copy that waits for the device (the
    normalisation constants are made once, fdk.augment.channel_constant)."""
    import dataclasses

    from fdk.bank import SyntheticBank
    from fdk.data import ImageTensors, batches
    from fdk.inputs import dataset_spec
    from fdk.kd import kd_step
    from fdk.methods import make_synthesizer
    from fdk.models import create_model, with_random_bn_statistics
    from fdk.presets import PRESETS

    spec = dataset_spec("cifar10")
    cfg = dataclasses.replace(PRESETS["smoke/fast_meta"], synth_batch_size=4, kd_batch_size=4, synth_steps=2, ngf=8,
                              nz=16)  # fmt: skip
    teacher = with_random_bn_statistics(create_model("resnet8", 10)).eval()
    student = create_model("resnet8", 10)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    synthesizer = make_synthesizer(cfg, teacher, spec)
    bank = SyntheticBank()
    data = ImageTensors(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 10, ())

    def steps():
        bank.add(synthesizer.synthesize(student).images)
        kd_step(cfg, teacher, student, optimizer, bank, spec, torch.contiguous_format)
        for x, _ in batches(data, 4, spec.mean, spec.std, True, True, True):
            student(x).sum().backward()

    steps()  # warm: the constants are made here
    made = []

    def counting(original):
        def make(*args, **kwargs):
            caller = traceback.extract_stack()[-2]
            if f"{os.sep}fdk{os.sep}" in caller.filename:  # fdk's own (torch.optim's host step counters aside)
                made.append(f"{caller.filename}:{caller.lineno}")
            return original(*args, **kwargs)

        return make

    for name in ("tensor", "as_tensor"):
        monkeypatch.setattr(torch, name, counting(getattr(torch, name)))
    steps()
    assert made == []
