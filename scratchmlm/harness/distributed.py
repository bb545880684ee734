"""Several processes training one model: ``torch.distributed`` with DistributedDataParallel.

    torchrun --nproc_per_node=2 -m scratchmlm train --run-dir runs/ddp ...

``torchrun`` starts N copies of the same command and tells each one its place through environment
variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Every
process -- a *rank* -- then:

- builds the same model from the same initialisation seed;
- draws its own windows and masks from generators seeded by (seed, rank), so the ranks see
  different data;
- computes the gradient of its own batch; ``DistributedDataParallel`` averages the gradients of
  all ranks during ``backward``, so every rank takes the same optimizer step and the weights stay
  identical. The global batch is ``batch_size x world_size``.

Rank 0 alone writes the run directory (logs, samples, checkpoints) and evaluates, once, on the
frozen validation set. The backend is ``gloo`` for the CPU and ``nccl`` for CUDA GPUs.

``World`` is what the Trainer needs to know about the other ranks; a single process is a world of
one, in which every collective below is the identity, so the Trainer reads the same either way.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ScratchMLMError


@dataclass
class World:
    """This process's place among the training processes (a world of one by default)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0            # the rank among the processes of this machine: its GPU index

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # -- collectives: every rank must call them, in the same order --------------------------------
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over all ranks (a new tensor)."""
        tensor = tensor.clone()
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_int(self, value: int, device: torch.device) -> int:
        """The largest of the ranks' ``value``: e.g. "did any rank receive a stop signal?"."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather_to_main(self, obj) -> list | None:
        """Every rank's ``obj`` (picklable), as a list indexed by rank on rank 0; ``None`` elsewhere."""
        if not self.distributed:
            return [obj]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered


def world_from_environment() -> World:
    """The ``World`` that ``torchrun``'s environment variables describe (one process without them)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ScratchMLMError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start several processes "
                              "with torchrun --nproc_per_node=N -m scratchmlm train ...") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ScratchMLMError(f"Inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, "
                              f"LOCAL_RANK={local_rank}.")
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def start_world(device_name: str) -> World:
    """Join the process group torchrun set up (nothing to do for a single process).

    The backend follows the device: ``nccl`` when the processes train on CUDA GPUs (each on the
    GPU ``cuda:LOCAL_RANK``), ``gloo`` on CPUs.
    """
    world = world_from_environment()
    if not world.distributed or dist.is_initialized():
        return world
    on_gpu = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if on_gpu:
        if world.local_rank >= torch.cuda.device_count():
            raise ScratchMLMError(f"Rank {world.rank} wants GPU cuda:{world.local_rank}, but this machine has "
                                  f"{torch.cuda.device_count()}; use --nproc_per_node at most the GPU count.")
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return world


def stop_world(world: World) -> None:
    """Leave the process group; call it on every rank, after a barrier.

    A ``DistributedDataParallel`` model holds the group, and a finished Trainer sits in a reference
    cycle that only the garbage collector frees -- otherwise while the interpreter shuts down,
    after the group is gone, where gloo's teardown can abort the process. Collecting first frees
    the model while the group is still alive.
    """
    if world.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
