"""What synthesis and KD cost: seconds per image and peak memory, measured (docs/method.md §6, §13).

The cost of a synthesis call does not depend on the weights, only on the architectures, the resolution,
the batch and k; so notebook 04 and benchmarks/imagenet.py measure it on randomly initialised ResNet-50s
where no pretrained teacher can be loaded, and the numbers hold for the real one.

    synthesis_cost(cfg, teacher, inputs, student)   seconds per synthesised image, images/s, peak memory
    kd_cost(cfg, teacher, student, inputs)          KD images/s and peak memory, from a filled bank

Peak memory: on CUDA the allocator's peak over the measured calls; on the CPU the process's peak
resident memory over them (Linux: /proc/self/status VmHWM, reset through /proc/self/clear_refs) above
what it held before, so both say how much more memory the work needs. None where neither is available.
glibc keeps freed memory for reuse, so on a CPU `peak_memory` has it hand freed blocks back
(`freed_memory_returned`), else a call after a warm-up shows a rise near 0; that slows allocation, so on
a CPU memory is read on the warm-up call and time on the calls after it (on CUDA both on the timed calls).
"""

import contextlib
import ctypes
import dataclasses
from pathlib import Path

import torch

from fdk.augment import make_augment, quantize
from fdk.bank import SyntheticBank
from fdk.inputs import InputSpec
from fdk.utils import Timer

MIB = 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """`with peak_memory(device) as peak: ...`; afterwards peak["mib"] is the block's peak extra memory.

    On a CPU the block runs with glibc handing freed memory back (`freed_memory_returned`), which slows
    allocations: time other calls than the ones measured here (synthesis_cost and kd_cost do)."""
    peak = {"mib": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        torch.cuda.synchronize(device)
        peak["mib"] = (torch.cuda.max_memory_allocated(device) - before) / MIB
        return
    with freed_memory_returned() as returned:
        if returned:
            _malloc_trim()
        before = _rss_kib("VmRSS")
        reset = _reset_peak_rss()
        yield peak
        if returned and before is not None and reset:
            peak["mib"] = max(0, _rss_kib("VmHWM") - before) / 1024


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # what glibc kept from earlier work goes back first
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def freed_memory_returned():
    """Make glibc hand freed blocks of 128 KiB or more straight back to the OS inside the block.

    fdk.cost measures CPU peak memory as the resident set's high-water mark above what the process
    held before; glibc keeps freed memory for reuse, so after a warm-up call that rise is close to 0.
    With this, the resident set follows the live tensors and the rise is what a call needs. No effect
    on CUDA (the allocator's own peak is used) or outside glibc. Afterwards the thresholds go back to glibc's
    largest defaults, but its dynamic threshold adjustment stays off for the rest of the process.
    Yields whether it took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        active = bool(libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        libc, active = None, False
    try:
        yield active
    finally:
        if active:
            libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's dynamic threshold tops out here
            libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)


def _rss_kib(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


def synthesis_cost(cfg, teacher, inputs: InputSpec, student=None, calls: int = 2, warmup: int = 1) -> dict:
    """Time `calls` synthesis calls of cfg's method (after `warmup` untimed ones: allocations, autotuning)."""
    from fdk.methods import make_synthesizer  # fdk.methods imports the models; keep this module light

    device = next(teacher.parameters()).device
    synth = make_synthesizer(cfg, teacher, inputs)
    cpu = device.type != "cuda"
    with peak_memory(device) if cpu else contextlib.nullcontext() as warm_peak:
        for _ in range(max(1, warmup)):
            synth.synthesize(student)
    timer = Timer(device)
    with contextlib.nullcontext(warm_peak) if cpu else peak_memory(device) as peak, timer:
        for _ in range(calls):
            synth.synthesize(student)
    images = calls * cfg.synth_batch_size
    return {"seconds_per_image": timer.seconds / images, "images_per_second": images / timer.seconds,
            "seconds_per_call": timer.seconds / calls, "peak_mib": peak["mib"]}  # fmt: skip


def kd_cost(cfg, teacher, student, inputs: InputSpec, steps: int = 4, warmup: int = 1, bank_images: int = 0,
            source=None) -> dict:  # fmt: skip
    """Time `steps` KD steps (batch cfg.kd_batch_size) on a bank of random uint8 images, or on `source`'s
    batches (a generator baseline's synthesizer: a fresh G(z) per step, §15); ZSKT's attention transfer
    is included when cfg.w_at > 0."""
    from fdk.attention import transfer_stages
    from fdk.kd import kd_phase

    device = next(teacher.parameters()).device
    if source is None:
        source = SyntheticBank(device)
        shape = (max(bank_images, cfg.kd_batch_size), len(inputs.mean), inputs.image_size, inputs.image_size)
        source.add(quantize(torch.rand(shape, device=device)))
    optimizer = torch.optim.SGD(student.parameters(), cfg.lr, momentum=cfg.momentum)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    augment = make_augment(cfg.kd_augment, inputs.image_size)
    attention = transfer_stages(cfg, teacher, student, inputs) if cfg.w_at > 0 else None
    cpu = device.type != "cuda"

    def run(n):
        kd_phase(dataclasses.replace(cfg, kd_steps=n), teacher, student, optimizer, source, inputs, memory_format,
                 augment, attention)  # fmt: skip

    with peak_memory(device) if cpu else contextlib.nullcontext() as warm_peak:
        run(max(1, warmup))
    timer = Timer(device)
    with contextlib.nullcontext(warm_peak) if cpu else peak_memory(device) as peak, timer:
        run(steps)
    images = steps * cfg.kd_batch_size
    return {"images_per_second": images / timer.seconds, "seconds_per_step": timer.seconds / steps,
            "peak_mib": peak["mib"]}  # fmt: skip
