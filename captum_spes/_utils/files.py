#!/usr/bin/env python3
"""File-writing policy shared by every writer.

* Nothing a user saved is replaced silently: :func:`refuse_overwrite` runs before any work.
* A file appears whole or not at all: :func:`atomic_write` writes a temporary file in the
  target's folder and renames it over the target (``os.replace``, atomic on one file
  system), so an interrupted run never leaves a truncated result behind.
* A written file gets the mode the user's umask asks for (``0o666 & ~umask``, e.g. 0644
  under umask 022), as ``open()`` would give it. The temporary file is created private
  (0600, :func:`tempfile.mkstemp`), and a rename keeps the mode, so it is set before the
  rename.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["refuse_overwrite", "atomic_write", "default_file_mode"]


def refuse_overwrite(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Return ``path`` as a Path; raise FileExistsError if it exists and ``overwrite`` is False."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it or choose another path")
    return target


def _current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        # Linux >= 4.7 reports it; reading it avoids the window in which os.umask(0) would
        # let another thread create a world-writable file.
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask: ``0o666 & ~umask``."""
    return 0o666 & ~_current_umask()


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    r"""Write ``path`` atomically: yield a temporary path to write, then rename it onto ``path``.

    The temporary file lies in ``path``'s folder (created if missing) and ends with the same
    suffix, so writers that infer the format from the name (``savefig``) work unchanged. On
    success it gets :func:`default_file_mode` and replaces ``path``; if the block raises
    (or is interrupted), the temporary file is removed and ``path`` is left as it was.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(folder / "notes.txt") as temporary:
    ...     _ = temporary.write_text("done")
    >>> (folder / "notes.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('done', ['notes.txt'])

    Args:
        path (str or PathLike): the file to write. Checking that it may be replaced is the
            caller's business (:func:`refuse_overwrite`).

    Yields:
        *Path* of the temporary file to write (it exists, empty).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".partial{target.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, default_file_mode())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
