#!/usr/bin/env python3
"""File-writing policy shared by every writer: nothing a user saved is replaced silently."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["refuse_overwrite"]


def refuse_overwrite(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Return ``path`` as a Path; raise FileExistsError if it exists and ``overwrite`` is False."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it or choose another path")
    return target
