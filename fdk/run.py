"""Run folders and run state: the bookkeeping that distillation and teacher training share.

    <out>/run.json           what ran: the job, its config, the teacher file and its SHA-256, the data
                             folder, fdk's version and commit, the machine
    <out>/metrics.jsonl      one JSON object per epoch, then {"event": "end", ...the summary}
    <out>/checkpoint.pt      RunState.state_dict(), written atomically after every epoch (weights_only-safe)
    <out>/bank.u8            distillation: the synthetic images, appended each epoch (docs/method.md §8)
    <out>/*.safetensors      the final weights, with metadata

A job validates every input before `RunFolder.start` writes anything, so a bad command leaves no trace.
Resuming loads the checkpoint and drops metric lines of epochs after it: the run continues exactly.
"""

import dataclasses
import json
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from fdk.checkpoint import atomic_save, atomic_write, file_sha256, load_checkpoint, write_json
from fdk.utils import ROOT, VERSION, FdkError, Timer, rng_state, set_rng_state


@dataclass(kw_only=True)
class RunState:
    """What a run must save and restore. A subclass declares its live parts (objects with
    state_dict()/load_state_dict(): models, optimisers, schedules, the synthesizer, the bank) in PARTS."""

    PARTS: ClassVar[tuple[str, ...]] = ()
    LOCAL_PARTS: ClassVar[tuple[str, ...]] = ()  # parts every torchrun rank keeps for itself (fdk/distributed.py)
    epoch: int = -1  # the last finished epoch
    timers: dict[str, Timer] = field(default_factory=dict)  # synchronised seconds per phase
    summary: dict = field(default_factory=dict)  # JSON values only

    def state_dict(self) -> dict:
        return {
            **{name: getattr(self, name).state_dict() for name in self.PARTS},
            "epoch": self.epoch,
            "seconds": {name: timer.seconds for name, timer in self.timers.items()},
            "summary": dict(self.summary),
            "rng": rng_state(),
        }

    def local_state_dict(self) -> dict:
        """What a rank other than 0 saves: its own parts and random state (rank 0's checkpoint has the rest)."""
        return {**{name: getattr(self, name).state_dict() for name in self.LOCAL_PARTS}, "epoch": self.epoch,
                "rng": rng_state()}  # fmt: skip

    def load_state_dict(self, state: dict, local: dict | None = None) -> None:
        """Restore from a checkpoint; `local`: this rank's own parts and random state (ranks other than 0)."""
        for name in self.PARTS:
            if local is None or name not in self.LOCAL_PARTS:
                getattr(self, name).load_state_dict(state[name])
        if local is not None:
            if local["epoch"] != state["epoch"]:
                raise FdkError(
                    f"a rank's checkpoint is at epoch {local['epoch']} but rank 0's at {state['epoch']} (the run "
                    "stopped while saving); resume is not possible from this folder, start afresh"
                )
            for name in self.LOCAL_PARTS:
                getattr(self, name).load_state_dict(local[name])
        self.epoch = state["epoch"]
        for name, seconds in state["seconds"].items():
            self.timers[name].seconds = seconds
        self.summary = dict(state["summary"])
        set_rng_state((local or state)["rng"])


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self.run_file = self.path / "run.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.checkpoint_file = self.path / "checkpoint.pt"
        self.bank_file = self.path / "bank.u8"

    def rank_file(self, rank: int) -> Path:
        """Where torchrun rank `rank` > 0 saves its own parts (RunState.local_state_dict)."""
        return self.path / f"rank{rank}.pt"

    def bank_file_for(self, rank: int) -> Path:
        return self.bank_file if rank == 0 else self.path / f"bank-rank{rank}.u8"

    def start(self, job: str, config, teacher_file=None, **extra) -> None:
        """A new run in this folder: write run.json and an empty metrics.jsonl (an earlier run's files go)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (self.checkpoint_file, self.bank_file, self.metrics_file, *self.path.glob("*rank*.*")):
            stale.unlink(missing_ok=True)
        teacher = None
        if teacher_file is not None:
            teacher = {"file": str(teacher_file), "sha256": file_sha256(teacher_file)}
        info = {
            "job": job,
            "config": dataclasses.asdict(config),
            "teacher": teacher,
            **extra,
            "fdk": VERSION,
            "commit": git_commit(),
            "machine": machine_info(),
        }
        write_json(info, self.run_file)
        self.metrics_file.touch()

    def info(self) -> dict:
        """run.json, or a clear error when this is not a run folder."""
        if not self.run_file.exists():
            raise FdkError(f"{self.path} is not an fdk run folder (no run.json); check the path")
        return json.loads(self.run_file.read_text())

    def log(self, **record) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")

    def records(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def save(self, state: RunState, rank: int = 0) -> None:
        """Rank 0 writes the checkpoint; a torchrun rank > 0 writes only its own parts (fdk/distributed.py)."""
        if rank == 0:
            atomic_save(state.state_dict(), self.checkpoint_file)
        else:
            atomic_save(state.local_state_dict(), self.rank_file(rank))

    def resume(self, state: RunState, rank: int = 0) -> None:
        """Load the last checkpoint into `state` and forget metric lines written after it (rank 0)."""
        if not self.checkpoint_file.exists():
            raise FdkError(f"cannot resume: {self.checkpoint_file} does not exist (no epoch finished); start afresh")
        saved = load_checkpoint(self.checkpoint_file)
        if rank > 0:
            if not self.rank_file(rank).exists():
                raise FdkError(f"cannot resume rank {rank}: {self.rank_file(rank)} does not exist; resume with "
                               "as many processes as the run had (run.json: world_size)")  # fmt: skip
            state.load_state_dict(saved, local=load_checkpoint(self.rank_file(rank)))
            return
        state.load_state_dict(saved)
        kept = [r for r in self.records() if r.get("epoch", -1) <= state.epoch and r.get("event") != "end"]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.metrics_file, lambda tmp: Path(tmp).write_text(text))

    def finish(self, summary: dict) -> None:
        self.log(event="end", **summary)


def read_run(path) -> dict:
    """A run folder's record for notebooks and plots: {'info': run.json, 'epochs': [per-epoch records],
    'summary': the end record or None while it runs}."""
    folder = RunFolder(path)
    records = folder.records()
    ends = [r for r in records if r.get("event") == "end"]
    return {
        "info": folder.info(),
        "epochs": [r for r in records if "epoch" in r and "event" not in r],
        "summary": ends[-1] if ends else None,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: torch.device | None = None) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device if device is not None and device.type == "cuda" else None)
    return info


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
