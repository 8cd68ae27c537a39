#!/usr/bin/env python3
r"""Running on one process or under ``torchrun``: ranks, devices, sharding, barriers.

Under ``torchrun --nproc-per-node N`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, e.g. SLURM with
``srun torchrun``) every process joins one ``torch.distributed`` process group; without
them the run is a single process and nothing is initialised.

Documented decisions:

* The process group uses the **gloo** backend on every device. Ranks exchange only small
  Python objects (the list of pending ids, a barrier, evaluation statistics); no tensor is
  ever reduced, so NCCL would add nothing but its own failure modes (a watchdog that aborts
  long waits, one GPU per collective). Each rank still computes on its own GPU.
* Devices: ``auto`` is CUDA when available, else CPU. With CUDA, rank ``r`` of a node uses
  ``cuda:LOCAL_RANK``; more ranks per node than GPUs is refused (two ranks on one GPU only
  compete for it).
* CPU threads: on CPU, ``N`` ranks on a node each get ``cores // N`` torch threads (at least
  1), so that two ranks on two cores do not oversubscribe them; ``threads`` overrides.
* Sharding is round-robin over the pending utterances in manifest order (rank ``r`` takes
  items ``r, r + N, ...``): deterministic, and balanced when utterance lengths vary along
  the manifest.
* Barriers wait up to :data:`TIMEOUT` (a rank that finishes its shard early waits for the
  others there); a crashed rank makes ``torchrun`` stop the whole group.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from captum_spes.errors import InputError

__all__ = ["TIMEOUT", "RANK_ERRORS", "DistributedContext", "initialize", "resolve_device", "shard", "configure_threads"]

#: Longest a barrier waits for the other ranks.
TIMEOUT = datetime.timedelta(hours=24)
#: Errors that rank 0 hands to every rank (:meth:`DistributedContext.run_on_main`): the
#: library's user error and the environment's (a missing, existing or locked file).
RANK_ERRORS: tuple[type[BaseException], ...] = (InputError, OSError)
_POLL_SECONDS = 1.0
_Item = TypeVar("_Item")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


@dataclass
class DistributedContext:
    r"""Where this process stands among the ranks of the run.

    Attributes:
        rank (int): global rank, 0 for a single process.
        world_size (int): number of ranks.
        local_rank (int): rank on this node (its GPU index).
        local_world_size (int): ranks on this node.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self, while_waiting: Callable[[], None] | None = None) -> None:
        """Wait for every rank; call ``while_waiting`` about once a second meanwhile (progress)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        work = dist.barrier(async_op=True)
        while not work.is_completed():
            if while_waiting is not None:
                while_waiting()
            time.sleep(_POLL_SECONDS)
        work.wait()
        if while_waiting is not None:
            while_waiting()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object; others pass anything)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` in rank order on rank 0; None on the others."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def run_on_main(self, action: Callable[[], _Item], user_errors: tuple[type[BaseException], ...]) -> _Item:
        r"""Run ``action`` on rank 0 and hand its value to every rank.

        An error of a type in ``user_errors`` raised on rank 0 is raised on every rank (as
        the same type, with the same message), so that all ranks stop with the same line
        instead of waiting for rank 0 forever.
        """
        outcome: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                outcome = ("ok", action())
            except user_errors as error:
                if not self.distributed:
                    raise
                outcome = ("error", (type(error), str(error)))
        kind, payload = self.broadcast(outcome)
        if kind == "error":
            error_type, message = payload
            raise error_type(message)
        return payload

    def main_first(self, action: Callable[[], _Item], needed: bool = True) -> _Item | None:
        r"""Run ``action`` on rank 0, then, after a barrier, on the other ranks.

        For work whose first run fills a shared cache (loading an embedded model converts
        it into a cache folder once): the other ranks then read the finished cache instead
        of converting it at the same time. Every rank must call it; ``needed=False`` takes
        part in the barrier without running ``action`` (returns None).
        """
        value = action() if self.is_main and needed else None
        self.barrier()
        if not self.is_main and needed:
            value = action()
        return value

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def initialize(timeout: datetime.timedelta = TIMEOUT) -> DistributedContext:
    """The context of this process; joins the process group when launched by torchrun."""
    context = DistributedContext(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", 1),
    )
    if context.world_size < 1 or not 0 <= context.rank < context.world_size:
        raise InputError(f"RANK={context.rank} and WORLD_SIZE={context.world_size} do not describe a rank")
    if context.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo", timeout=timeout)
    return context


def resolve_device(request: str, context: DistributedContext) -> str:
    r"""The torch device of this rank for ``--device`` ``auto``, ``cpu`` or ``cuda``.

    Raises:
        InputError: if CUDA is requested but missing, or this node runs more ranks than it
            has GPUs.
    """
    import torch

    if request not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, got {request!r}")
    if request == "cpu" or (request == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise InputError("--device cuda was requested but CUDA is not available here; use --device cpu or auto")
    gpus = torch.cuda.device_count()
    if context.local_world_size > gpus:
        raise InputError(
            f"{context.local_world_size} ranks on this node but {gpus} GPU(s): start one rank per GPU "
            f"(torchrun --nproc-per-node {gpus}) or pass --device cpu"
        )
    torch.cuda.set_device(context.local_rank)
    return f"cuda:{context.local_rank}"


def configure_threads(device: str, context: DistributedContext, threads: int | None) -> int:
    """Set torch's intra-op threads for this rank (see the module docstring); returns the count."""
    import torch

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    elif device == "cpu" and context.local_world_size > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // context.local_world_size))
    return torch.get_num_threads()


def shard(items: Sequence[_Item], context: DistributedContext) -> list[_Item]:
    """This rank's share of ``items``: every ``world_size``-th item from position ``rank``."""
    return list(items[context.rank :: context.world_size])
