"""Small real filesystems for disk-full and read-only tests: a tmpfs mounted under tmp_path.

A full disk here is a real ENOSPC (a filler file takes every free page) and a read-only one a
real EROFS (a read-only remount); chmod would not do, since root ignores directory permissions.
Mounting needs root (CI runs as root); elsewhere the tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096  # tmpfs hands out space a page at a time


class Tmpfs:
    """A mounted tmpfs: fill it, free it, remount it read-only or read-write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def free_bytes(self) -> int:
        """Return the space still free, in bytes."""
        fs = os.statvfs(self.path)
        return fs.f_bavail * fs.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all free space with a filler file, then give back ``leave`` bytes (whole pages)."""
        with self.filler.open("ab", buffering=0) as handle:  # unbuffered: close cannot fail
            with contextlib.suppress(OSError):  # ENOSPC: the disk is full
                while True:
                    handle.write(b"\0" * 65536)
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(0, size - size % PAGE - leave))
        assert self.free_bytes() == leave, (self.free_bytes(), leave)

    def free(self) -> None:
        """Remove the filler: the disk has room again."""
        self.filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        """Remount read-only: every write now fails with EROFS."""
        _mount("-o", "remount,ro", str(self.path))

    def read_write(self) -> None:
        """Remount read-write."""
        _mount("-o", "remount,rw", str(self.path))

    def leftovers(self, folder: Path) -> list[str]:
        """Return the names in ``folder`` that an atomic write left behind (``.NAME.*.tmp``)."""
        return sorted(p.name for p in folder.rglob(".*.tmp"))


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)}: {done.stderr.strip()}")


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str = "1m") -> Iterator[Tmpfs]:
    """Mount a tmpfs of ``size`` at ``path`` (created), yield it, and always unmount it.

    Skip the calling test when this process may not mount (not root, no mount binary, a
    container without the capability).
    """
    if os.geteuid() != 0:
        pytest.skip("a real full / read-only filesystem needs a tmpfs mount, which needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount/umount binaries to make a real full / read-only filesystem")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")
    try:
        yield Tmpfs(path)
    finally:
        # A process still holding a file there (a crashed child) must not leak the mount.
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
