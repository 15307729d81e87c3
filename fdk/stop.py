"""Graceful stop (docs/method.md §8): SIGTERM or SIGINT asks a run to stop after its current step.

A cluster scheduler's pre-emption (SIGTERM), Ctrl-C and a notebook's interrupt (SIGINT) set a flag; the
run's loop looks at it after every synthesis call and every KD or training step, writes a checkpoint of
exactly that point and raises `Stopped`, from which `--resume` continues bit-exactly. A second signal stops
at once (the last checkpoint stays valid: every write is atomic). A repeat within REPEAT_SECONDS of the
first counts as the same request: Ctrl-C reaches every process of a torchrun job directly and again
through torchrun, which forwards the signals it gets to its workers.

    with StopRequest("fdk distill --resume runs/x") as stop:
        for step in ...:
            ...
            if stop.requested:
                save(); raise stop.stopped("after KD step 12 of 400")
"""

import os
import signal
import threading
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_SECONDS = 1.0


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal; the message says where and how to resume. A KeyboardInterrupt, so code
    that catches Exception lets it through, as it does Ctrl-C. The CLI exits with 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    def __str__(self) -> str:
        return self.args[0]


class StopRequest:
    """Catches SIGTERM and SIGINT while a run's loop runs (in the main thread; elsewhere it never fires)."""

    def __init__(self, resume_hint: str, listen: bool = True):
        self.resume_hint, self.listen = resume_hint, listen
        self.signum: int | None = None
        self._first = 0.0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def stopped(self, where: str, then: str | None = None) -> Stopped:
        """The exception to raise once the checkpoint of `where` is written; `then`: what to run instead of
        the resume command (when no checkpoint was written yet)."""
        name = signal.Signals(self.signum).name
        if then is None:
            return Stopped(f"stopped by {name} {where}; the checkpoint holds that point: continue with "
                           f"{self.resume_hint}", self.signum)  # fmt: skip
        return Stopped(f"stopped by {name} {where}; nothing to resume yet: run {then}", self.signum)

    def __enter__(self):
        if self.listen and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum, self._first = signum, time.monotonic()
            # os.write, not print: the handler may run while the main thread is inside a print (tqdm's bar)
            os.write(2, f"\nfdk: {name}: stopping after the current step and writing a checkpoint "
                        f"(send it again to stop at once)\n".encode())  # fmt: skip
        elif time.monotonic() - self._first > REPEAT_SECONDS:
            self._restore()
            raise Stopped(f"stopped at once by a second {name}; the checkpoint of the last finished epoch (or "
                          f"of an earlier graceful stop) is kept: continue with {self.resume_hint}", signum)  # fmt: skip
