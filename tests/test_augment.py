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
