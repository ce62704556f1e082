"""One place that sets up the device and the process group, and the few collectives training needs.

Single process: rank 0 of 1, no process group. Under ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on GPUs,
gloo on CPU, one GPU per local rank. Training code calls the methods of ``World`` and never checks
which case it is in.

Collectives time out after ``COLLECTIVE_TIMEOUT`` (a rank that died or hangs stops the run with an
error instead of leaving the others waiting forever); nothing in training keeps one rank busy alone
for long (evaluation is shared by all ranks), so the limit only catches real failures.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from pretrain.cpu_matmul import use_onednn_matmul

# How long a rank waits in a collective before the run fails. Generous: a checkpoint save or the
# first compilation of a step may keep one rank away for minutes.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns the tensor."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equally shaped tensors of every rank along dim 0, in rank order."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given ("cpu", "cuda", "cuda:1", "mps"), else CUDA when available, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rank_device(requested: torch.device, local_rank: int, world_size: int) -> tuple[torch.device, str | None]:
    """The device of a rank and, when the request was overridden, why.

    One process: the request as given (a bare "cuda" means cuda:0). Under torchrun each rank takes
    the GPU of its local rank; a request naming one GPU ("cuda:0") is ignored, so ranks never end up
    sharing a GPU.
    """
    if requested.type != "cuda":
        return requested, None
    if world_size > 1 and requested.index is not None:
        return (torch.device("cuda", local_rank),
                f"--device {requested} is ignored under torchrun: each rank uses cuda:<local rank>")
    return (requested if requested.index is not None else torch.device("cuda", local_rank)), None


def setup_world(device: str | None = None) -> World:
    """Read torchrun's environment; start the process group when there is more than one rank. On a CPU,
    fp32 products go to oneDNN where that keeps fp32 precision (``pretrain.cpu_matmul``)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen, note = rank_device(pick_device(device), local_rank, size)
    if note and rank == 0:
        print(f"note: {note}", file=sys.stderr)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    else:
        use_onednn_matmul()
    if size > 1 and not dist.is_initialized():
        cuda = chosen.type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                device_id=chosen if cuda else None)
    return World(rank, size, local_rank, chosen)


def teardown_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 compute where the GPU supports it (L4, A100, H100), fp32 elsewhere (CPU, older GPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
