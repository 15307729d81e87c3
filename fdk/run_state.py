"""What a run saves and restores: `RunState`, the checkpoint's contents (docs/method.md §8).

Distillation (`DistillState`) and teacher training (`TeacherState`) subclass it with their live parts;
`fdk.run.RunFolder.save` writes it atomically, `RunFolder.resume` loads it back, so a run continues
exactly, from the end of an epoch or from the step where a signal stopped it (`progress`).
"""

from dataclasses import dataclass, field
from typing import ClassVar

from fdk.utils import Timer, rng_state, set_rng_state


@dataclass(kw_only=True)
class RunState:
    """What a run must save and restore. A subclass declares its live parts (objects with
    state_dict()/load_state_dict(): models, optimisers, schedules, the synthesizer, the bank) in PARTS."""

    PARTS: ClassVar[tuple[str, ...]] = ()
    LOCAL_PARTS: ClassVar[tuple[str, ...]] = ()  # parts every torchrun rank keeps for itself (fdk/distributed.py)
    epoch: int = -1  # the last finished epoch
    progress: dict | None = None  # how far the next epoch got when a signal stopped it mid-epoch (§8)
    saves: int = 0  # checkpoints written: a rank's own file pairs with rank 0's checkpoint of the same count
    timers: dict[str, Timer] = field(default_factory=dict)  # synchronised seconds per phase
    summary: dict = field(default_factory=dict)  # JSON values only

    def state_dict(self) -> dict:
        return {
            **{name: getattr(self, name).state_dict() for name in self.PARTS},
            "epoch": self.epoch,
            "progress": self.progress,
            "saves": self.saves,
            "seconds": {name: timer.seconds for name, timer in self.timers.items()},
            "summary": dict(self.summary),
            "rng": rng_state(),
        }

    def local_state_dict(self) -> dict:
        """What a rank other than 0 saves: its own parts and random state (rank 0's checkpoint has the rest)."""
        parts = {name: getattr(self, name).state_dict() for name in self.LOCAL_PARTS}
        return {**parts, "epoch": self.epoch, "saves": self.saves, "rng": rng_state()}

    def load_state_dict(self, state: dict, local: dict | None = None) -> None:
        """Restore from a checkpoint; `local`: this rank's own parts and random state (ranks other than 0)."""
        for name in self.PARTS:
            if local is None or name not in self.LOCAL_PARTS:
                getattr(self, name).load_state_dict(state[name])
        for name in self.LOCAL_PARTS if local is not None else ():
            getattr(self, name).load_state_dict(local[name])
        self.epoch, self.progress, self.saves = state["epoch"], state.get("progress"), state.get("saves", 0)
        for name, seconds in state["seconds"].items():
            self.timers[name].seconds = seconds
        self.summary = dict(state["summary"])
        set_rng_state((local or state)["rng"])
