"""Generators of the synthesizers (docs/method.md §3.1) and the `reset_l0` trick (§3.5).

`Generator` is the upstream 32x32 generator (2,328,899 parameters at nz=256, ngf=64); `img_size`
sets the starting resolution (img_size // 4), so 128x128 for segmentation needs no new class. Its `head`
is upstream's Sigmoid (pixels in [0, 1]) or the output of the generator baselines' own published
generators (§15): Tanh then an affine-free BatchNorm (DAFL, DFAD) or the BatchNorm alone (ZSKT), which
gives images already normalised, each channel zero-mean and unit-variance over the batch.
`DeepGenerator` is the 224x224 ImageNet generator from a spatial latent, without upstream's unused
`l1` Linear (which broke the FOMAML path there, §3.1).
"""

import torch
import torch.nn as nn

GENERATOR_HEADS = {
    "sigmoid": lambda nc: [nn.Sigmoid()],  # images in [0, 1]; normalisation happens after augmentation
    "tanh_bn": lambda nc: [nn.Tanh(), nn.BatchNorm2d(nc, affine=False)],  # normalised images (DAFL, DFAD)
    "bn": lambda nc: [nn.BatchNorm2d(nc, affine=False)],  # normalised images (ZSKT)
}


class Generator(nn.Module):
    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3, head: str = "sigmoid"):
        super().__init__()
        self.nz, self.ngf, self.init_size = nz, ngf, img_size // 4
        self.l1 = nn.Sequential(nn.Linear(nz, ngf * 2 * self.init_size**2))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(ngf * 2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf * 2, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
            *GENERATOR_HEADS[head](nc),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z.flatten(1))  # (B, 2ngf·s·s)
        out = out.view(out.shape[0], self.ngf * 2, self.init_size, self.init_size)  # (B, 2ngf, s, s)
        return self.conv_blocks(out)  # (B, nc, 4s, 4s)

    def latent_shape(self) -> tuple[int, ...]:
        return (self.nz,)


class DeepGenerator(nn.Module):
    """224x224 from a (nz, img_size/16, img_size/16) latent: four x2 upsamplings (§3.1)."""

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 224, nc: int = 3):
        super().__init__()
        self.nz, self.init_size = nz, img_size // 16

        def up(cin, cout):
            return [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2, inplace=True),
            ]

        self.conv_blocks = nn.Sequential(
            nn.Conv2d(nz, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            *up(2 * ngf, 2 * ngf),
            *up(2 * ngf, ngf),
            *up(ngf, ngf),
            *up(ngf, ngf),
            nn.Conv2d(ngf, nc, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_blocks(z)  # (B, nz, s, s) -> (B, nc, 16s, 16s)

    def latent_shape(self) -> tuple[int, ...]:
        return (self.nz, self.init_size, self.init_size)


@torch.no_grad()
def reset_l0(generator: nn.Module) -> None:
    """Re-initialise `l1.0` and `conv_blocks.0` with N(0, 0.02) weights and zero biases (§3.5).

    In the 32x32 generator `conv_blocks.0` is the first BatchNorm, so its γ becomes N(0, 0.02), not 1
    (upstream's post-fix behaviour, kept for fidelity); the following BNs renormalise the signal.
    The meta-optimiser's Adam moments are not reset, as upstream.
    """
    modules = dict(generator.named_modules())
    for name in ("l1.0", "conv_blocks.0"):
        module = modules.get(name)
        if module is not None and getattr(module, "bias", None) is not None:
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)


@torch.no_grad()
def reinitialize(module: nn.Module) -> None:
    """Fresh PyTorch default initialisation of every layer (the "no reuse" baseline, Fig. 2a)."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
