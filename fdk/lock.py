"""One process per run folder (docs/method.md §8.1): an exclusive fcntl lock on <folder>/run.lock.

The kernel releases the lock when its holder closes it or ends, however it ends (kill -9 included), so
a lock never outlives a crash. The file is never deleted: a process that unlinked it would let the next
one lock a new file while a third still holds the old one. It records who holds it, for the message
another process gets.
"""

import json
import os
import socket
import time
from pathlib import Path

from fdk.utils import FdkError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per folder is then the user's to keep
    fcntl = None


class FolderLock:
    def __init__(self, path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (creating the file), or raise FdkError naming the holder."""
        if self._fd is not None or fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._in_use() from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def check_free(self) -> None:
        """Raise FdkError if another process holds the lock; writes nothing (a shared lock, taken and dropped)."""
        if self._fd is not None or fcntl is None or not self.path.is_file():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._in_use() from None
        finally:
            os.close(fd)

    def _in_use(self) -> FdkError:
        try:
            holder = json.loads(self.path.read_text())
            who = f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
        except (OSError, ValueError, KeyError):
            who = "its pid is not recorded yet"
        return FdkError(f"{self.path.parent} is in use by another fdk process ({who}); wait for it to end or stop "
                        "it (a stopped run resumes from its checkpoint), or choose another --out")  # fmt: skip
