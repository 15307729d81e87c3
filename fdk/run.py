"""Run folders and run state: the bookkeeping that distillation and teacher training share (docs/method.md §8).

    <out>/run.json           what ran: the job, its config, the teacher file and its SHA-256, the data
                             folder, fdk's version and commit, the machine
    <out>/metrics.jsonl      one JSON object per epoch, then {"event": "end", ...the summary}
    <out>/checkpoint.pt      RunState.state_dict(), written atomically after every epoch (weights_only-safe)
    <out>/bank.u8            distillation: the synthetic images, appended each epoch
    <out>/rank<r>.pt, rank<r>.prev.pt, bank-rank<r>.u8, spill-rank<r>.u8    torchrun ranks' own parts (§14)
    <out>/samples.png, student.safetensors or model.safetensors, report.json    the outputs
    <out>/run.lock           held (fcntl) by the one process that runs in the folder

fdk owns exactly these names (`RunFolder.owned`) and never reads, moves or deletes anything else in the
folder. A new run in a folder that holds one is refused unless the caller asks to overwrite it; a job
validates every input before `RunFolder.start` writes anything, so a bad command leaves no trace.
Resuming loads the checkpoint and drops metric lines of epochs after it: the run continues exactly.
"""

import dataclasses
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

import fdk.distributed as distributed
from fdk.checkpoint import atomic_write, file_sha256, load_checkpoint, torch_bytes, write_at, write_json
from fdk.config import from_dict, to_dict
from fdk.lock import FolderLock
from fdk.run_state import RunState
from fdk.utils import ROOT, VERSION, FdkError

# What a run may write besides run.json, metrics.jsonl and checkpoint.pt (the rank files: RunFolder.owned).
OUTPUTS = ("bank.u8", "samples.png", "student.safetensors", "model.safetensors", "report.json")
LOCK_NAME = "run.lock"  # never deleted: unlinking a lock file lets two processes hold "the" lock
# atomic_write's temporary files (mkstemp: 8 random characters) of the names above, which a killed process leaves
_TEMPORARY = re.compile(r"^\.(run\.json|metrics\.jsonl|checkpoint\.pt|bank\.u8|samples\.png|student\.safetensors|"
                        r"model\.safetensors|report\.json|rank\d+(\.prev)?\.pt)\.[a-z0-9_]{8}\.tmp$")


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self.run_file = self.path / "run.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.checkpoint_file = self.path / "checkpoint.pt"
        self.bank_file = self.path / "bank.u8"
        self._lock = FolderLock(self.path / LOCK_NAME)

    def rank_file(self, rank: int, previous: bool = False) -> Path:
        """Where torchrun rank `rank` > 0 saves its own parts (RunState.local_state_dict); the previous
        save is kept beside it until rank 0's checkpoint has caught up (`save`)."""
        return self.path / (f"rank{rank}.prev.pt" if previous else f"rank{rank}.pt")

    def bank_file_for(self, rank: int) -> Path:
        return self.bank_file if rank == 0 else self.path / f"bank-rank{rank}.u8"

    def spill_file_for(self, rank: int) -> Path:
        return self.path / f"spill-rank{rank}.u8"

    def owned(self, world_size: int = 1) -> list[Path]:
        """Every file a run of `world_size` processes may write here, by exact name (the lock file aside)."""
        names = ["run.json", "metrics.jsonl", "checkpoint.pt", *OUTPUTS]
        paths = [self.path / name for name in names] + [self.spill_file_for(r) for r in range(world_size)]
        for rank in range(1, world_size):
            paths += [self.rank_file(rank), self.rank_file(rank, previous=True), self.bank_file_for(rank)]
        return paths

    # --- who may write here: checks that write nothing, then the lock -----------------------------------------

    def check_start(self, overwrite: bool = False, world_size: int = 1) -> None:
        """Refuse, writing nothing, a new run here when another process runs here, when files with fdk's
        names were not written by an fdk run, or when a run is here and `overwrite` is False."""
        self._lock.check_free()
        info = self._fdk_info()
        if info is None:
            foreign = [p.name for p in self.owned(world_size) if p.exists()]
            if foreign:
                raise FdkError(f"{self.path} holds {', '.join(foreign)} but no fdk run (no run.json): fdk would "
                               "overwrite what it did not write; move those files away or choose another --out")
            return
        if not overwrite:
            raise FdkError(f"{self.path} holds {self.describe(info)}; continue it with fdk {info['job']} --resume "
                           f"{self.path} (Python: resume=True), or replace it with --overwrite (overwrite=True)")

    def check_resume(self, config, world_size: int = 1) -> dict:
        """run.json of the run to resume, once no other process runs here, the saved config equals `config`
        and the run had `world_size` processes (nothing is written)."""
        self._lock.check_free()
        info = self.info()
        saved = from_dict(type(config), info["config"])
        if saved != config:
            changed = {k: (v, getattr(config, k)) for k, v in to_dict(saved).items() if getattr(config, k) != v}
            raise FdkError(f"{self.path} holds a run with another config (saved vs given: {changed}); resume with "
                           f"its config (fdk {info['job']} --resume DIR reads it) or use a new out_dir")  # fmt: skip
        if info.get("world_size", 1) != world_size:
            raise FdkError(f"{self.path} ran on {info.get('world_size', 1)} processes, this resume on {world_size}; "
                           f"resume with torchrun --nproc_per_node {info.get('world_size', 1)}")  # fmt: skip
        return info

    def lock(self) -> None:
        """Hold run.lock for this run's life (fdk/lock.py); under torchrun rank 0 holds it for every rank (§14)."""
        self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    def _fdk_info(self) -> dict | None:
        """run.json when an fdk run wrote it, None when there is none; an error for someone else's run.json."""
        if not self.run_file.exists():
            return None
        try:
            info = json.loads(self.run_file.read_text())
        except (OSError, ValueError):
            info = None
        if not isinstance(info, dict) or not {"job", "config", "fdk"} <= info.keys():
            raise FdkError(f"{self.run_file} was not written by fdk; choose another --out")
        return info

    def describe(self, info: dict | None = None) -> str:
        """'a finished distill run (20 of 20 epochs, final_top1 41.2)' or 'an unfinished ... (3 of 20 epochs)'."""
        info = info or self.info()
        records = self.records()
        done = sum(1 for r in records if "epoch" in r and "event" not in r)
        ends = [r for r in records if r.get("event") == "end"]
        total = info["config"].get("epochs", "?")
        if not ends:
            return f"an unfinished {info['job']} run ({done} of {total} epochs done)"
        metric = next((k for k in ("final_top1", "final_miou", "test_top1", "test_miou") if k in ends[-1]), None)
        value = f", {metric} {ends[-1][metric]:.2f}" if metric and ends[-1][metric] is not None else ""
        return f"a finished {info['job']} run ({done} of {total} epochs{value})"

    # --- the run's own files ------------------------------------------------------------------------------------

    def start(self, job: str, config, teacher_file=None, overwrite: bool = False, world_size: int = 1,
              **extra) -> None:  # fmt: skip
        """A new run in this folder: take the lock, check again (another process may have started since the
        caller's check_start), remove an earlier run's files (with `overwrite`; only those, by name), then
        write run.json and an empty metrics.jsonl."""
        self.lock()
        self.check_start(overwrite, world_size)
        earlier = self._fdk_info()
        stale = self.owned(max(world_size, earlier.get("world_size", 1) if earlier else 1))
        self._remove_temporaries()
        for path in stale:
            if path != self.run_file:
                path.unlink(missing_ok=True)
        teacher = None
        if teacher_file is not None:
            teacher = {"file": str(teacher_file), "sha256": file_sha256(teacher_file)}
        info = {
            "job": job,
            "config": dataclasses.asdict(config),
            "teacher": teacher,
            "world_size": world_size,
            **extra,
            "fdk": VERSION,
            "commit": git_commit(),
            "machine": machine_info(),
        }
        write_json(info, self.run_file)  # first: from here on the folder is an fdk run, whatever fails next
        write_at(self.metrics_file, 0, [], 0)

    def _remove_temporaries(self) -> None:
        """Temporary files of atomic writes that a killed process left behind: ours by their exact pattern."""
        for path in self.path.glob(".*.tmp"):
            if _TEMPORARY.match(path.name):
                path.unlink(missing_ok=True)

    def info(self) -> dict:
        """run.json, or a clear error when this is not a run folder."""
        if not self.run_file.exists():
            raise FdkError(f"{self.path} is not an fdk run folder (no run.json); check the path")
        return self._fdk_info()

    def log(self, **record) -> None:
        """Append one line to metrics.jsonl; a failed write leaves the file as it was."""
        line = (json.dumps(record, default=_json_default) + "\n").encode()
        offset = self.metrics_file.stat().st_size if self.metrics_file.exists() else 0
        write_at(self.metrics_file, offset, [line], len(line))

    def records(self) -> list[dict]:
        """metrics.jsonl's records; a last line cut short (a process killed while writing it) is left out."""
        if not self.metrics_file.exists():
            return []
        lines = [line for line in self.metrics_file.read_text().splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except ValueError:
                if i < len(lines) - 1:
                    raise FdkError(f"{self.metrics_file} line {i + 1} is not JSON; was it edited?") from None
        return records

    def save(self, state: RunState, rank: int = 0) -> None:
        """One checkpoint of every rank: ranks > 0 first write their own parts (keeping their previous file),
        then rank 0 writes checkpoint.pt. A kill at any moment leaves a pair with the same `saves` count."""
        state.saves += 1
        if rank > 0:
            current = self.rank_file(rank)
            if current.exists():
                os.replace(current, self.rank_file(rank, previous=True))
            atomic_write(current, torch_bytes(state.local_state_dict()))
        distributed.barrier()  # every rank's part is on disk before rank 0's checkpoint names their count
        if rank == 0:
            atomic_write(self.checkpoint_file, torch_bytes(state.state_dict()))

    def resume(self, state: RunState, rank: int = 0) -> None:
        """Take the lock (rank 0), load the last checkpoint into `state` and forget metric lines written
        after it."""
        if not self.checkpoint_file.exists():
            raise FdkError(f"cannot resume: {self.checkpoint_file} does not exist (no epoch finished); start "
                           "afresh with --overwrite (overwrite=True)")  # fmt: skip
        if rank > 0:  # rank 0 holds the lock for every rank
            saved = load_checkpoint(self.checkpoint_file)
            state.load_state_dict(saved, local=self._rank_state(rank, saved))
            return
        self.lock()
        self._remove_temporaries()
        saved = load_checkpoint(self.checkpoint_file)
        state.load_state_dict(saved)
        kept = [r for r in self.records() if r.get("epoch", -1) <= state.epoch and r.get("event") != "end"]
        text = "".join(json.dumps(r) + "\n" for r in kept).encode()
        atomic_write(self.metrics_file, text)

    def _rank_state(self, rank: int, saved: dict) -> dict:
        """This rank's file that pairs with rank 0's checkpoint: the current one or the one before."""
        files = [self.rank_file(rank), self.rank_file(rank, previous=True)]
        if not any(f.exists() for f in files):
            raise FdkError(f"cannot resume rank {rank}: {files[0]} does not exist; resume with as many processes "
                           "as the run had (run.json: world_size)")  # fmt: skip
        for file in files:
            if file.exists():
                local = load_checkpoint(file)
                if (local.get("saves"), local["epoch"]) == (saved.get("saves"), saved["epoch"]):
                    return local
        raise FdkError(f"rank {rank}'s files in {self.path} do not pair with checkpoint.pt (epoch {saved['epoch']}); "
                       "this run cannot be resumed, start afresh with --overwrite")  # fmt: skip

    def finish(self, summary: dict) -> None:
        self.log(event="end", **summary)

    def failed(self, job: str, error: Exception) -> FdkError:
        """A failed write's error (fdk.checkpoint.WriteFailed) with what to do next."""
        then = f"continue with fdk {job} --resume {self.path}" if self.checkpoint_file.exists() else \
            "run the command again with --overwrite"
        return FdkError(f"{error}; the run folder keeps its last good state: free space, then {then}")


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
