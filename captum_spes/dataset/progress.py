#!/usr/bin/env python3
r"""Progress over utterances: one bar per rank, and on rank 0 a total over all ranks.

Rank 0 learns the other ranks' progress from their index shards (the records they append),
so no collective call is needed while the ranks work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from captum_spes.dataset.distributed import DistributedContext

__all__ = ["UtteranceProgress"]


class _ShardFollower:
    """Counts the lines appended to some files since it was created."""

    def __init__(self, paths: list[Path]) -> None:
        self._offsets = {path: path.stat().st_size if path.exists() else 0 for path in paths}
        self.count = 0

    def poll(self) -> int:
        for path, offset in self._offsets.items():
            if not path.exists():
                continue
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            # Count complete lines only; a partial one is counted once it ends.
            complete = chunk.rfind(b"\n") + 1
            self.count += chunk[:complete].count(b"\n")
            self._offsets[path] = offset + complete
        return self.count


class UtteranceProgress:
    r"""The bars of one rank.

    Args:
        context (DistributedContext): the run's ranks.
        own_total (int): utterances of this rank.
        total (int): utterances of all ranks (rank 0's total bar).
        other_shards (list of Path): the other ranks' index shards (rank 0 only).
        label (str): what is counted, e.g. "explained".
        enabled (bool): show the bars. Default: True
    """

    def __init__(
        self,
        context: DistributedContext,
        own_total: int,
        total: int,
        other_shards: list[Path],
        label: str,
        enabled: bool = True,
    ) -> None:
        name = f"rank {context.rank} {label}" if context.distributed else label
        self._own = tqdm(total=own_total, desc=name, unit="utt", position=context.rank, disable=not enabled)
        self._total: Any = None
        self._follower: _ShardFollower | None = None
        if context.is_main and context.distributed:
            self._total = tqdm(
                total=total, desc=f"all ranks {label}", unit="utt", position=context.world_size, disable=not enabled
            )
            self._follower = _ShardFollower(other_shards)

    def advance(self) -> None:
        """One utterance of this rank is finished."""
        self._own.update(1)
        self.refresh_total()

    def refresh_total(self) -> None:
        """Bring the total up to date with the other ranks' shards (rank 0)."""
        if self._total is None or self._follower is None:
            return
        self._total.n = self._own.n + self._follower.poll()
        self._total.refresh()

    def close(self) -> None:
        self.refresh_total()
        self._own.close()
        if self._total is not None:
            self._total.close()
