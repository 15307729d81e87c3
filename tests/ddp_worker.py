"""One torchrun rank of the distributed tests (tests/test_distributed.py launches it with 2 gloo processes).

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py OUT

Each rank writes OUT/rank{r}.pt with what the tests compare across ranks and runs:
- "meta", "imagenet": student, generator (and latent) after a short run of fast_meta / fast_meta_imagenet;
- "full", "resumed": student and bank after 3 epochs straight vs 2 epochs, a stop, and a resume;
- "kd_ddp", "kd_doubled": a BN-free student after KD steps with 2 ranks x B images vs 1 process x 2B.
"""

import copy
import dataclasses
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import fdk
from fdk.augment import make_augment
from fdk.bank import SyntheticBank
from fdk.distributed import wrap_student
from fdk.inputs import dataset_spec
from fdk.kd import kd_phase
from fdk.models.loading import EMBEDDED_TEACHER
from fdk.presets import PRESETS

TINY = dict(epochs=3, warmup=1, ep_steps=4, kd_steps=2, synth_batch_size=8, kd_batch_size=8, synth_steps=2, ngf=8,
            cosine_t_max=2, reset_l0_call=3, eval_every=1)  # fmt: skip


def state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def main(out: Path) -> None:
    dist.init_process_group("gloo")  # fdk.distill uses the group it finds
    rank = dist.get_rank()
    teacher = fdk.load_model(EMBEDDED_TEACHER)
    results = {}

    cfg = dataclasses.replace(PRESETS["smoke/fast_meta"], **TINY)
    run = fdk.distill(cfg, teacher, out_dir=out / "full", progress=False)
    results["meta"] = {"student": state(run.student), "generator": state(run.synthesizer.generator),
                       "summary": run.summary}  # fmt: skip
    results["full"] = {"student": state(run.student), "bank": run.bank.images.clone()}

    fdk.distill(cfg, teacher, out_dir=out / "stopped", progress=False, on_epoch=lambda record: record["epoch"] == 1)
    resumed = fdk.distill(cfg, teacher, out_dir=out / "stopped", progress=False, resume=True)
    results["resumed"] = {"student": state(resumed.student), "bank": resumed.bank.images.clone()}

    imagenet = dataclasses.replace(
        PRESETS["smoke/imagenet"], dataset="cifar10", teacher="resnet20", student="wrn16_1", **TINY, reinit_z=2
    )
    run = fdk.distill(imagenet, teacher, progress=False)
    results["imagenet"] = {"student": state(run.student), "generator": state(run.synthesizer.generator),
                           "z": run.synthesizer.z.detach().clone(), "bank": run.bank.images.clone()}  # fmt: skip

    results.update(kd_equivalence(rank))
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def kd_equivalence(rank: int, b: int = 6) -> dict:
    """KD steps where the maths says 2 ranks x B = 1 process x 2B: a mean loss, no batch-dependent layer
    (no BN), no augmentation; DDP averages the two ranks' gradients = the gradient of the 2B mean."""
    cfg = dataclasses.replace(PRESETS["smoke/fast_meta"], kd_steps=3, kd_batch_size=b, kd_augment="none")
    spec = dataset_spec("cifar10")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * b, 3, 32, 32), dtype=torch.uint8, generator=gen)
    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 15 * 15, 10))  # fmt: skip
    doubled = dataclasses.replace(cfg, kd_batch_size=2 * b)
    reference = {}
    for name, model, config, part in (("kd_doubled", _copy(student), doubled, images),
                                      ("kd_ddp", _copy(student), cfg, images[rank * b : (rank + 1) * b])):  # fmt: skip
        bank = SyntheticBank()
        bank.add(part)
        trained = wrap_student(model, torch.device("cpu")) if name == "kd_ddp" else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        kd_phase(config, teacher, trained, optimizer, bank, spec, torch.contiguous_format, make_augment("none", 32))
        reference[name] = state(model)
    return reference


def _copy(model):
    return copy.deepcopy(model)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
