"""Fault injection: does a run survive what machines and people do to it? (docs/method.md §8)

Each trial runs `fdk distill` on the embedded teacher at a tiny size in its own process, beside decoy
files of the user's, hurts it, recovers it the way a user would (`--resume DIR`; a fresh start where no
checkpoint was written yet), and compares the student and the bank files bit for bit with an
uninterrupted run of the same config, and the decoys byte for byte. `bytes_lost` counts every byte of
those files that differs or is missing.

    kill9        kill -9 at a random moment of the run (after run.json exists)
    kill9_at     kill -9 in the middle of writing a chosen file: at byte N of checkpoint.pt, bank.u8,
                 metrics.jsonl, samples.png, student.safetensors or run.json, or inside a disk spill
    sigterm      SIGTERM (a scheduler's pre-emption) at a random moment: the run checkpoints where it is
    sigint       SIGINT (Ctrl-C) at a random moment
    two_signals  SIGTERM, then another 1.5 s later while the step is still running: it stops at once
    enospc       a full disk at byte N of a chosen file (an injected ENOSPC): a one-line error, exit 2
    concurrent   the same command started twice at once: one runs, the other is refused, exit 2
    ddp_kill9    2-process torchrun: kill -9 of rank 1 at a random moment, or in its k-th checkpoint write
    ddp_enospc   2-process torchrun: a full disk while rank 1 appends to its bank file
    ddp_sigterm  2-process torchrun: SIGTERM to torchrun, which forwards it to both ranks
    ddp_locked   2-process torchrun on a folder another process holds: refused on both ranks

    .venv/bin/python benchmarks/faults.py --out benchmarks/results/faults-cpu.json         # every kind
    .venv/bin/python benchmarks/faults.py --kinds sigterm enospc --repeats 3                # a few
    .venv/bin/python benchmarks/faults.py worker --kill-at bank.u8:5000 -- distill ...      # one hurt process

The worker is fdk's CLI with one fault patched in: file writes go through fdk.checkpoint._write, so a
patched one can stop (kill -9) or fail (ENOSPC) at a chosen byte of a chosen file.
"""

import argparse
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "weights" / "cifar10_resnet20.safetensors"
SETS = ["epochs=6", "warmup=1", "ep_steps=4", "kd_steps=2", "synth_batch_size=8", "kd_batch_size=8", "synth_steps=1",
        "student=resnet8", "ngf=8", "nz=16", "reset_l0_call=3"]  # fmt: skip
SPILL = ["bank_device_images=12", "bank_spill=disk"]  # all but the first 12 images spill to spill-rank<r>.u8
DECOYS = ["frank.txt", "ranking.csv", "rank0.notes", "checkpoint.pt.bak", "notes.md", "rank2.pt"]
COMPARED = ["student.safetensors", "bank.u8", "bank-rank1.u8"]  # what must equal the uninterrupted run's
# NAME@F: once the bytes written to NAME reach F times the size NAME ends with in the uninterrupted run
# (checkpoint.pt@2.5: half-way through the third checkpoint); "spill@N": half-way through the N-th append to a
# disk spill (kill), or the disk full when the spill file grows (ENOSPC).
POINTS = ["checkpoint.pt@2.5", "bank.u8@0.5", "metrics.jsonl@0.5", "samples.png@0.5", "student.safetensors@0.5",
          "run.json@0.5", "spill@3"]  # fmt: skip
KINDS = ["kill9", "kill9_at", "sigterm", "sigint", "two_signals", "enospc", "concurrent", "ddp_kill9", "ddp_enospc",
         "ddp_sigterm", "ddp_locked"]  # fmt: skip


# --- the worker: fdk's CLI with one fault patched in -------------------------------------------------------------


def worker(argv) -> int:
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="faults.py worker")
    p.add_argument("--kill-at", help="NAME:BYTES: kill -9 once BYTES bytes of files named NAME were written")
    p.add_argument("--fail-at", help="NAME:BYTES: fail with ENOSPC there instead")
    p.add_argument("--rank", type=int, help="hurt only this torchrun rank")
    p.add_argument("--sleep-per-step", type=float, default=0.0, help="seconds added to every KD step")
    p.add_argument("--pid-file", help="write this process's pid here (torchrun: .<rank> appended)")
    args = p.parse_args(argv[:split])
    rank = int(os.environ.get("RANK", "0"))
    if args.pid_file:
        Path(f"{args.pid_file}.{rank}").write_text(str(os.getpid()))
    if args.rank is None or args.rank == rank:
        _patch(args)
    from fdk.cli import main

    return main(argv[split + 1 :])


def _patch(args) -> None:
    import importlib

    import fdk.bank_storage
    import fdk.checkpoint

    distill = importlib.import_module("fdk.distill")  # the module: fdk.distill is the function (fdk/__init__.py)

    point = args.kill_at or args.fail_at or ""
    if point.startswith("spill") and args.fail_at:  # the disk is full when the spill file grows
        def full(fd, offset, size):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.posix_fallocate = full
    elif point.startswith("spill"):  # inside the N-th memmap append of a disk spill: half the images, then the kill
        append, calls, nth = fdk.bank_storage.DiskSpill.append, [0], int(point.partition("@")[2] or 1)

        def hurt_append(self, images):
            calls[0] += 1
            if calls[0] == nth:
                append(self, images[: len(images) // 2])
                _hurt(args, self.path)
            append(self, images)

        fdk.bank_storage.DiskSpill.append = hurt_append
    elif point:
        name, limit = point.rsplit(":", 1)
        write, counted = fdk.checkpoint._write, [0]

        def hurt_write(f, data):
            base = os.path.basename(str(f.name))
            if base == name or base.startswith(f".{name}."):  # the file or its atomic-write temporary
                data = memoryview(data).cast("B")
                room = int(limit) - counted[0]
                if room < len(data):
                    write(f, data[: max(0, room)])
                    _hurt(args, f.name)
                counted[0] += len(data)
            write(f, data)

        fdk.checkpoint._write = hurt_write
    if args.sleep_per_step:
        step = distill.kd_step

        def slow_step(*a, **k):
            time.sleep(args.sleep_per_step)
            return step(*a, **k)

        distill.kd_step = slow_step


def _hurt(args, where) -> None:
    if args.kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))


# --- trials -----------------------------------------------------------------------------------------------------


def command(out: Path, spill=False, fault=(), torchrun=False, extra=()) -> list[str]:
    sets = [a for s in SETS + (SPILL if spill else []) for a in ("--set", s)]
    fdk_args = ["distill", "--preset", "smoke/fast_meta", "--teacher", str(TEACHER), "--data", "", "--out", str(out),
                "--no-progress", *sets, *extra]  # fmt: skip
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        return [*launcher, str(Path(__file__).resolve()), "worker", *fault, "--", *fdk_args]
    return [sys.executable, str(Path(__file__).resolve()), "worker", *fault, "--", *fdk_args]


def resume_command(out: Path, torchrun=False) -> list[str]:
    args = ["distill", "--resume", str(out), "--no-progress"]
    if torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "fdk", *args]
    return [sys.executable, "-m", "fdk", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FDK_DATA": "", "PYTHONPATH": str(REPO)}


def start(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def put_decoys(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(DECOYS):
        (folder / name).write_bytes(f"the user's {name} #{i}\n".encode() * 40)
    return {name: (folder / name).read_bytes() for name in DECOYS}


def differing(want: bytes, got: bytes) -> int:
    return abs(len(want) - len(got)) + sum(a != b for a, b in zip(want, got))


def contents(path: Path) -> list[bytes]:
    """A file's bytes; a safetensors file's as its tensors' bytes and its metadata, by name (safetensors
    writes the metadata's keys in no fixed order, so equal files need not be equal bytes)."""
    if not path.exists():
        return []
    if path.suffix != ".safetensors":
        return [path.read_bytes()]
    import torch
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        tensors = [f.get_tensor(k).contiguous().view(-1).view(torch.uint8).numpy().tobytes() for k in sorted(f.keys())]
        return [json.dumps(f.metadata(), sort_keys=True).encode(), *tensors]


def bytes_lost(out: Path, reference: Path, decoys: dict) -> int:
    """Bytes of the uninterrupted run's student and banks, and of the decoys, that differ or are missing."""
    lost = 0
    for name in COMPARED:
        want, got = contents(reference / name), contents(out / name)
        got += [b""] * (len(want) - len(got))
        lost += sum(differing(w, g) for w, g in zip(want, got))
    for name, data in decoys.items():
        lost += differing(data, (out / name).read_bytes() if (out / name).exists() else b"")
    return lost


def finished(out: Path) -> bool:
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    return any('"event": "end"' in line for line in lines)


def recover(out: Path, spill=False, torchrun=False) -> list[str]:
    """What a user does after a failure: resume from the checkpoint, or start again where none was written;
    returns the steps taken."""
    steps = []
    for _ in range(3):
        if finished(out):
            return steps
        if (out / "checkpoint.pt").exists():
            steps.append("resume")
            code, err = finish(start(resume_command(out, torchrun)))
        else:
            steps.append("start again")
            extra = ["--overwrite"] if (out / "run.json").exists() else []
            code, err = finish(start(command(out, spill, torchrun=torchrun, extra=extra)))
        if code != 0:
            raise RuntimeError(f"recovery step {steps[-1]} exited {code}: {err[-2000:]}")
    raise RuntimeError(f"{out} did not finish after {steps}")


def wait_for(path: Path, proc: subprocess.Popen, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def fdk_line(text: str) -> str:
    """The first line fdk's CLI printed about its end (torchrun's own report follows it)."""
    return next((line for line in text.splitlines() if line.startswith("fdk distill: ")), "")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class Trials:
    """Runs trials in `work`, against uninterrupted reference runs made once per setting."""

    def __init__(self, work: Path, seed: int = 0):
        self.work, self.rng, self.rows = Path(work), random.Random(seed), []
        self._references: dict = {}

    def reference(self, spill=False, torchrun=False) -> dict:
        key = (spill, torchrun)
        if key not in self._references:
            out = self.work / f"reference-{'spill' if spill else 'host'}{'-ddp' if torchrun else ''}"
            proc = start(command(out, spill, torchrun=torchrun))
            wait_for(out / "run.json", proc)
            began = time.monotonic()
            while not finished(out) and proc.poll() is None:
                time.sleep(0.02)
            trained = time.monotonic() - began  # from run.json to the end record: the window faults aim at
            code, err = finish(proc)
            if code != 0:
                raise RuntimeError(f"the reference run failed ({code}): {err[-2000:]}")
            sizes = {p.name: p.stat().st_size for p in out.iterdir()}
            self._references[key] = {"out": out, "seconds": trained, "sizes": sizes}
        return self._references[key]

    def run(self, kind: str, **options) -> dict:
        name = f"{len(self.rows):03d}-{kind}"
        row = {"kind": kind, **options, **getattr(self, kind)(self.work / name, **options)}
        spill = options.get("spill", False) or options.get("point", "").startswith("spill")
        ref = self.reference(spill, kind.startswith("ddp"))
        row["bytes_lost"] = bytes_lost(self.work / name, ref["out"], row.pop("decoys"))
        row["survived"] = row["bytes_lost"] == 0 and row.pop("expected")
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def _hit(self, out, proc, ref, signum, pid=None) -> tuple[float, bool]:
        """Once run.json appears, wait a random moment of the run (uniform over the first 80% of the
        uninterrupted run's time from there to its end record: runs vary), then send `signum` to `pid` (the
        process); returns the moment and whether it was sent (not when the run had ended)."""
        wait_for(out / "run.json", proc)
        delay = self.rng.uniform(0.0, 0.8 * ref["seconds"])
        time.sleep(delay)
        sent = proc.poll() is None and pid != 0
        if sent:
            os.kill(pid or proc.pid, signum)
        return round(delay, 2), sent

    # each kind: hurt, recover, and say whether the process behaved as documented
    def kill9(self, out, spill=False):
        ref, decoys = self.reference(spill), put_decoys(out)
        proc = start(command(out, spill))
        delay, killed = self._hit(out, proc, ref, signal.SIGKILL)
        finish(proc)
        return {"at_seconds": delay, "killed": killed, "recovery": recover(out, spill), "decoys": decoys,
                "expected": True}  # fmt: skip

    def _bytes(self, point: str, torchrun=False) -> str:
        """NAME@F as NAME:BYTES, from the uninterrupted run's file sizes."""
        if point.startswith("spill"):
            return point
        name, fraction = point.split("@")
        return f"{name}:{int(float(fraction) * self.reference(torchrun=torchrun)['sizes'][name])}"

    def kill9_at(self, out, point="bank.u8@0.5"):
        spill = point.startswith("spill")
        decoys = put_decoys(out)
        code, err = finish(start(command(out, spill, fault=["--kill-at", self._bytes(point)])))
        return {"point": point, "exit": code, "recovery": recover(out, spill), "decoys": decoys,
                "expected": code == -signal.SIGKILL}  # fmt: skip

    def enospc(self, out, point="checkpoint.pt@2.5"):
        spill = point.startswith("spill")
        decoys = put_decoys(out)
        code, err = finish(start(command(out, spill, fault=["--fail-at", self._bytes(point)])))
        message = last_line(err)
        ok = code == 2 and "No space left on device" in message and "it needs" in message and len(err.strip().splitlines()) == 1
        return {"point": point, "exit": code, "message": message, "recovery": recover(out, spill), "decoys": decoys,
                "expected": ok}  # fmt: skip

    def _signalled(self, out, signum, second=False):
        ref, decoys = self.reference(), put_decoys(out)
        fault = ["--sleep-per-step", "2.0"] if second else []
        proc = start(command(out, fault=fault))
        if second:  # during a 2-second KD step after epoch 0's checkpoint: the second signal comes mid-step
            wait_for(out / "checkpoint.pt", proc)
            delay, sent = 0.3, True
            for pause in (0.3, 1.5):
                time.sleep(pause)
                os.kill(proc.pid, signum)
        else:
            delay, sent = self._hit(out, proc, ref, signum)
        code, err = finish(proc)
        message = last_line(err)
        # after the end record the run is whole, whatever the signal does to the exiting process
        done_before = finished(out) and not second
        expected = not sent or done_before or (code == 128 + signum and f"--resume {out}" in message and
                                               ("at once" in message) == second)  # fmt: skip
        return {"at_seconds": delay, "sent": sent, "finished_before": done_before, "exit": code, "message": message,
                "recovery": recover(out), "decoys": decoys, "expected": expected}  # fmt: skip

    def sigterm(self, out):
        return self._signalled(out, signal.SIGTERM)

    def sigint(self, out):
        return self._signalled(out, signal.SIGINT)

    def two_signals(self, out):
        return self._signalled(out, signal.SIGTERM, second=True)

    def concurrent(self, out):
        decoys = put_decoys(out)
        procs = [start(command(out)) for _ in range(2)]
        results = [finish(p) for p in procs]
        codes = sorted(code for code, _ in results)
        refused = [last_line(err) for code, err in results if code == 2]
        expected = codes == [0, 2] and any("is in use by another fdk process" in m or "holds a" in m for m in refused)
        return {"exits": codes, "message": refused[0] if refused else "", "recovery": recover(out),
                "decoys": decoys, "expected": expected}  # fmt: skip

    def ddp_kill9(self, out, point=None):
        ref, decoys = self.reference(torchrun=True), put_decoys(out)
        pids = out / "pid"
        fault = ["--pid-file", str(pids)] + (["--rank", "1", "--kill-at", self._bytes(point, True)] if point else [])
        proc = start(command(out, fault=fault, torchrun=True))
        delay, sent = None, True
        if point is None:  # kill -9 of rank 1, whose pid file is there once run.json is
            wait_for(out / "run.json", proc)
            pid_file = Path(f"{pids}.1")
            pid = int(pid_file.read_text()) if pid_file.exists() else 0
            delay, sent = self._hit(out, proc, ref, signal.SIGKILL, pid=pid)
        code, err = finish(proc)
        sent = sent if point is None else code != 0  # a kill inside a write fired if the job failed
        return {"point": point, "at_seconds": delay, "sent": sent, "exit": code, "message": fdk_line(err),
                "recovery": recover(out, torchrun=True), "decoys": decoys, "expected": True}  # fmt: skip

    def ddp_enospc(self, out, point="bank-rank1.u8@0.5"):
        decoys = put_decoys(out)
        fault = ["--rank", "1", "--fail-at", self._bytes(point, True)]
        code, err = finish(start(command(out, fault=fault, torchrun=True)))
        message = fdk_line(err)
        expected = code != 0 and "No space left on device" in message and "it needs" in message
        return {"point": point, "exit": code, "message": message, "recovery": recover(out, torchrun=True),
                "decoys": decoys, "expected": expected}  # fmt: skip

    def ddp_sigterm(self, out):
        ref, decoys = self.reference(torchrun=True), put_decoys(out)
        proc = start(command(out, torchrun=True))
        delay, sent = self._hit(out, proc, ref, signal.SIGTERM)  # to torchrun, which forwards it to the ranks
        code, err = finish(proc)
        message = fdk_line(err)  # rank 0's, or the first rank's
        done_before = finished(out)
        expected = not sent or done_before or ("stopped by SIGTERM" in message and f"--resume {out}" in message)
        return {"at_seconds": delay, "sent": sent, "finished_before": done_before, "exit": code, "message": message,
                "recovery": recover(out, torchrun=True), "decoys": decoys, "expected": expected}  # fmt: skip

    def ddp_locked(self, out):
        import fcntl

        decoys = put_decoys(out)
        fd = os.open(out / "run.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            code, err = finish(start(command(out, torchrun=True)))
        finally:
            os.close(fd)
        written = sorted(p.name for p in out.iterdir() if p.name not in DECOYS and p.name != "run.lock")
        expected = code != 0 and "is in use by another fdk process" in err and not written
        return {"exit": code, "written": written, "recovery": recover(out, torchrun=True), "decoys": decoys,
                "expected": expected}  # fmt: skip


def plan(kinds, repeats: int) -> list[tuple[str, dict]]:
    """The trials of each kind: `repeats` random ones, or one per fault point."""
    trials = []
    for kind in kinds:
        if kind == "kill9_at":
            trials += [(kind, {"point": p}) for p in POINTS]
        elif kind == "enospc":
            trials += [(kind, {"point": p}) for p in POINTS]
        elif kind == "kill9":
            trials += [(kind, {"spill": i % 2 == 1}) for i in range(repeats)]
        elif kind == "ddp_kill9":
            # every other one in rank 1's k-th checkpoint part, k = 2..6 (the run writes 6)
            trials += [(kind, {"point": f"rank1.pt@{1.5 + i // 2 % 5}"}) if i % 2 else (kind, {}) for i in range(repeats)]
        elif kind in ("two_signals", "concurrent", "ddp_locked", "ddp_enospc"):
            trials.append((kind, {}))
        else:
            trials += [(kind, {})] * repeats
    return trials


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    p.add_argument("--repeats", type=int, default=5, help="trials of each random kind")
    p.add_argument("--seed", type=int, default=0, help="seed of the random moments")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "faults")
    p.add_argument("--out", type=Path, help="results JSON")
    args = p.parse_args(argv)
    from fdk.checkpoint import write_json
    from fdk.run import git_commit, machine_info

    started = time.perf_counter()
    trials = Trials(args.work, args.seed)
    for kind, options in plan(args.kinds, args.repeats):
        trials.run(kind, **options)
    rows = trials.rows
    by_kind = {k: {"trials": sum(r["kind"] == k for r in rows), "survived": sum(r["kind"] == k and r["survived"]
               for r in rows)} for k in dict.fromkeys(r["kind"] for r in rows)}  # fmt: skip
    result = {"trials": len(rows), "survived": sum(r["survived"] for r in rows),
              "bytes_lost": sum(r["bytes_lost"] for r in rows), "by_kind": by_kind, "seed": args.seed,
              "seconds": time.perf_counter() - started, "commit": git_commit(), "machine": machine_info(),
              "rows": rows}  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "machine")}))
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
