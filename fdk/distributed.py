"""Many GPUs with torchrun and DistributedDataParallel (docs/method.md §14). No launcher of our own:

    torchrun --nproc_per_node 8 -m fdk distill --preset imagenet/resnet50-resnet18/fast50 --teacher T.pth ...

`distill()` calls `setup()`, which joins the process group torchrun describes in the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL on GPUs, gloo on CPUs. Then every rank

- synthesises its own batch from its own random stream and keeps its own bank (its own latents too);
- averages the generator's meta-gradient with the others before the meta step (`average_across_ranks`),
  so the meta-generator θ stays the same on every rank;
- trains the student through DistributedDataParallel (KD gradients averaged; BN buffers from rank 0),
  so the student stays the same on every rank;
- and rank 0 alone evaluates, logs and writes the checkpoint; the other ranks save their own part
  (bank, synthesizer, random state) next to it, so a resumed run continues exactly.

Without torchrun (WORLD_SIZE unset) every function here is a no-op and fdk runs in one process.
"""

import os

import torch
import torch.distributed as dist

from fdk.utils import FdkError


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backend() -> str | None:
    """The process group's backend (nccl, gloo) or None outside torchrun."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def is_main() -> bool:
    return world()[0] == 0


def setup(device: torch.device) -> tuple[torch.device, bool]:
    """Join torchrun's process group when the environment describes one (torchrun sets WORLD_SIZE; with
    --nproc_per_node 1 this is a one-rank group that still trains through DDP: the runbook checks NCCL so).

    Returns the device this rank uses (cuda:LOCAL_RANK on GPUs) and whether this call created the group
    (then `teardown` should end it). A group the caller already made is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return _rank_device(device), False
    if "WORLD_SIZE" not in os.environ or not dist.is_available():
        return device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return _rank_device(device), True


def _rank_device(device: torch.device) -> torch.device:
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return device


def teardown(created: bool, clean: bool = True) -> None:
    """End a group that `setup` created; after an error (clean=False) without the barrier, since the other
    ranks may be anywhere (torchrun ends them when this one exits)."""
    if created and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


@torch.no_grad()
def average_across_ranks(tensors) -> None:
    """Replace each tensor by its mean over the ranks, in place (one all-reduce of one flat buffer)."""
    size = world()[1]
    tensors = [t for t in tensors if t is not None]
    if size < 2 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank src's buffers (BN running statistics) to every rank: after each rank's last forward
    they differ, as each normalised its own batch."""
    broadcast(list(module.buffers()), src)


@torch.no_grad()
def broadcast(tensors, src: int = 0) -> None:
    """Copy rank src's tensors to every rank, in place (e.g. weights re-initialised from each rank's RNG)."""
    if world()[1] < 2:
        return
    for t in tensors:
        dist.broadcast(t, src)


def all_ranks(flag: bool, device) -> bool:
    """True when flag is True on every rank (a stop or a failure on one rank stops them all together)."""
    if world()[1] < 2:
        return flag
    value = torch.tensor(1.0 if flag else 0.0, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def any_rank(flag: bool, device) -> bool:
    return not all_ranks(not flag, device)


def on_main(fn, device) -> None:
    """Run fn on rank 0 alone (e.g. check or write the run folder), then let every rank know how it went: an
    FdkError there is raised on every rank (rank 0's own; the others point to it), so no rank waits forever."""
    error = None
    if world()[0] == 0:
        try:
            fn()
        except FdkError as raised:
            error = raised
    if not all_ranks(error is None, device):
        raise error or FdkError("rank 0 could not use the run folder; its error above says why")


def wrap_student(student: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The student as the KD loop trains it: through DDP in a process group, itself otherwise."""
    if not (dist.is_available() and dist.is_initialized()):
        return student
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
