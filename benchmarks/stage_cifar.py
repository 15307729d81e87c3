"""Pack CIFAR-10 for a GPU machine that takes at most 64 MiB per job: uint8 parts of `--part-mib` each.

    python benchmarks/stage_cifar.py --data ../shared/data/cifar10 --out .gpu/cifar10 --part-mib 40

writes .gpu/cifar10/{train,test}-part-NN.safetensors (the raw pixels: 150 MiB train, 30 MiB test, no
compression to undo) and prints which parts to send with which job; `load_split(".gpu/cifar10", ...)`,
and so `fdk train-teacher --data .gpu/cifar10`, read them back bit-exactly. See benchmarks/README.md.
"""

import argparse
from pathlib import Path

from fdk.data import load_split, pack_split


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 class folders or torchvision files")
    parser.add_argument("--out", type=Path, default=Path(".gpu/cifar10"))
    parser.add_argument("--part-mib", type=float, default=40, help="largest part, MiB")
    args = parser.parse_args()
    for split in ("train", "test"):
        data = load_split(args.data, "cifar10", split)
        parts = pack_split(data, args.out, split, args.part_mib)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in parts)
        print(f"{split}: {len(data)} images -> {sizes}")


if __name__ == "__main__":
    main()
