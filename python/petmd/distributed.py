"""Data-parallel training across processes: torch.distributed's process group (gloo on CPU, NCCL on CUDA) and
DistributedDataParallel for the gradients.

`torchrun --nproc-per-node N -m petmd train CONFIG -o RUN` starts N processes with RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous address in their environment. Every process loads the whole data set and builds every global batch
(deterministic from seed, epoch and batch number); each takes its own share of the batch's frames, computes its
part of the loss — sums normalised by the counts of the whole batch — and its gradient, locally and in memory-bounded
chunks, under DDP's ``no_sync()``. One synchronising backward then lets DDP all-reduce the accumulated gradients,
so every process takes the same optimizer step as one process with the whole batch would, up to the order of the
floating-point sums.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
import torch.distributed as dist

from .errors import PetmdError

# a lost process makes the others wait in a collective; a bounded wait turns that into an error that stops the run
# (torchrun stops the whole group when one process fails, usually long before)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE_PROCESS = World()


def world_from_environment() -> World:
    """The World torchrun (or another launcher setting RANK and WORLD_SIZE) describes; one process otherwise."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE_PROCESS
    try:
        size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise PetmdError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (start the processes with torchrun)"
        ) from None
    return World(rank, size, local_rank)


def start(world: World, device: torch.device) -> torch.device:
    """Joins the process group (gloo for CPU training, NCCL for CUDA) and returns this process's device: with CUDA,
    the GPU numbered by the local rank, one per process."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        if not dist.is_nccl_available():
            raise PetmdError("training.device is cuda but this torch has no NCCL: install a CUDA build of torch")
        if world.local_rank >= torch.cuda.device_count():
            raise PetmdError(
                f"local rank {world.local_rank} has no GPU of its own ({torch.cuda.device_count()} on this node): "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, device_id=device if backend == "nccl" else None)
    return device


def stop(finished: bool) -> None:
    """Leaves the process group: after a finished run, once every process is done (a process tearing its
    connections down while another still uses them can abort it); after an error at once, since the others may
    never arrive (torchrun stops them)."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def check_same_config(world: World, config: dict) -> None:
    """Every process must train the same run: compares a hash of each process's config with rank 0's."""
    if not world.distributed:
        return
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).digest()[:8]
    mine = torch.tensor(list(digest), dtype=torch.int64)
    theirs = [torch.zeros_like(mine) for _ in range(world.size)]
    dist.all_gather(theirs, mine)
    differ = [rank for rank, other in enumerate(theirs) if not torch.equal(other, theirs[0])]
    if differ:
        raise PetmdError(
            f"the training processes were given different configs (ranks {differ} differ from rank 0): start "
            "every process with the same CONFIG file and options"
        )


def share(group: Sequence[int], n_atoms: Sequence[int], world: World) -> List[int]:
    """This process's frames of a global batch: frames go, largest first, to the process with the fewest atoms so
    far (ties to the lower rank), so shares balance by atoms; deterministic on every process. A batch with fewer
    frames than processes leaves some processes without frames for that step."""
    load = [0] * world.size
    mine: List[int] = []  # positions in the batch
    for position in sorted(range(len(group)), key=lambda p: (-n_atoms[p], p)):
        rank = min(range(world.size), key=lambda r: (load[r], r))
        load[rank] += n_atoms[position]
        if rank == world.rank:
            mine.append(position)
    return [group[position] for position in sorted(mine)]


def sum_over_processes(values: Dict[str, float], world: World) -> Dict[str, float]:
    """Sums of per-process figures (error sums, counts, flags) over all processes, in float64."""
    if not world.distributed:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


class _EveryParameter(torch.nn.Module):
    """What DDP wraps: the model, and a forward that returns 0 · (one entry of every parameter), whose backward
    marks each parameter ready exactly once. Calling it after gradients were accumulated under ``no_sync()``
    makes DDP all-reduce (average) them."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self) -> torch.Tensor:
        return torch.stack([p.reshape(-1)[0] for p in self.model.parameters()]).sum() * 0.0


class GradientSync:
    """DistributedDataParallel around the model for gradient averaging; its construction also broadcasts rank 0's
    parameters and buffers, so every process starts from the same weights."""

    def __init__(self, model: torch.nn.Module, world: World, device: torch.device):
        self.ddp = None
        if world.distributed:
            # gradients accumulated chunk by chunk keep the layout autograd gave them; DDP copies them into its
            # buckets all the same and says so on every step
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            ids = [device.index] if device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(_EveryParameter(model), device_ids=ids)

    def local(self):
        """The context in which this process accumulates its own gradient without communication."""
        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()

    def synchronize(self) -> None:
        """Average the accumulated gradients over the processes (DDP's all-reduce)."""
        if self.ddp is not None:
            self.ddp().backward()
