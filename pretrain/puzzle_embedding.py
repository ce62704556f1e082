"""The puzzle-identifier embedding: one row per augmented task version, trained with sparse sign-SGD.

The table ``(num_ids, dim)`` is a plain fp32 tensor held by this object, never an ``nn.Parameter``:
it is not in ``model.parameters()``, not in Adam, not in the EMA. It is replicated on every rank.

Where it lives (``storage``): ``"device"`` (the default) keeps the whole table on the compute
device; ``"host"`` keeps it in (pinned) host memory and moves only the rows a step looks up, and
their summed gradients back, so the device holds none of it between steps (ARC-AGI-1's 730,082 ids
x 512 fp32 are 1.39 GiB). The update is the same fp32 arithmetic on the same rows in the same order,
so both layouts give the same table (tested).

Use per optimizer step::

    emb = table.lookup(ids)                 # (B, dim) leaf tensor that will receive a gradient
    carry, logits, q = model(carry, tokens, emb)
    loss.backward()
    table.step(lr=1e-2, weight_decay=0.1)   # updates only the rows looked up since the last step

``step`` sums the gradients of rows that occur several times (in the batch and, when
torch.distributed is initialised, across ranks: each rank sums its own duplicates, then the per-row
sums of all ranks are gathered and summed per unique id), then for those rows only
``p <- p * (1 - lr * wd) - lr * sign(g)``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def sum_rows(ids: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
    """Unique ids (U,) and the summed gradient of each (U, dim): duplicates added with index_add."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    summed = torch.zeros(unique.shape[0], grads.shape[1], dtype=grads.dtype, device=grads.device)
    return unique, summed.index_add_(0, inverse, grads)


def all_reduce_rows(ids: Tensor, grads: Tensor) -> tuple[Tensor, Tensor]:
    """Sum per-row gradients over all ranks; ids (U,) unique per rank, grads (U, dim).

    Ranks hold different numbers of rows, so each pads to the largest count with id -1 before the
    all_gather; the padding is dropped and the gathered rows are summed per unique id.
    """
    world = dist.get_world_size()
    count = torch.tensor([ids.shape[0]], device=ids.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    if most == 0:
        return ids.long(), grads
    pad = most - ids.shape[0]
    ids_p = torch.cat([ids.long(), torch.full((pad,), -1, dtype=torch.long, device=ids.device)])
    grads_p = torch.cat([grads, grads.new_zeros(pad, grads.shape[1])])
    all_ids = [torch.empty_like(ids_p) for _ in range(world)]
    all_grads = [torch.empty_like(grads_p) for _ in range(world)]
    dist.all_gather(all_ids, ids_p)
    dist.all_gather(all_grads, grads_p)
    ids_cat, grads_cat = torch.cat(all_ids), torch.cat(all_grads)
    keep = ids_cat >= 0
    return sum_rows(ids_cat[keep], grads_cat[keep])


STORAGES = ("device", "host")


class PuzzleEmbedding:
    """A zero-initialised ``(num_ids, dim)`` fp32 table with lookups recorded for a sparse sign-SGD step.

    ``device`` is where looked-up rows are returned (the network's device); ``storage`` where the
    table itself lives: "device" or "host" (see the module's docstring).
    """

    def __init__(self, num_ids: int, dim: int, device: torch.device | str = "cpu", storage: str = "device"):
        if storage not in STORAGES:
            raise ValueError(f"puzzle table storage must be one of {STORAGES}, got {storage!r}")
        self.device, self.storage = torch.device(device), storage
        # Allocated where it lives: a device table never passes through host memory (1.4 GiB for ARC-AGI-1).
        home = self.device if storage == "device" else torch.device("cpu")
        self.weight = self._place(torch.zeros(num_ids, dim, device=home))
        self._pending: list[tuple[Tensor, Tensor]] = []  # (ids (B,), looked-up rows (B, dim)) since the last step

    @property
    def on_host(self) -> bool:
        """True when the table lives in host memory (on a CPU-only run that is the device itself)."""
        return self.storage == "host"

    def _place(self, table: Tensor) -> Tensor:
        if self.storage == "device":
            return table.to(self.device)
        table = table.cpu()
        return table.pin_memory() if self.device.type == "cuda" else table

    @property
    def num_ids(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def to(self, device: torch.device | str) -> "PuzzleEmbedding":
        self.device = torch.device(device)
        self.weight = self._place(self.weight)
        self._pending.clear()
        return self

    def lookup(self, ids: Tensor) -> Tensor:
        """Rows for ids (B,) -> (B, dim) fp32 on ``self.device``.

        With grad enabled the result is a fresh leaf that requires grad and is remembered for
        ``step``; under ``torch.no_grad()`` it is a plain copy and nothing is recorded. With the
        table on the host, ids already on the host are gathered without waiting for the device.
        """
        ids = ids.to(self.weight.device).long()
        rows = self.weight[ids]
        if self.on_host:
            rows = (rows.pin_memory() if self.device.type == "cuda" else rows).to(self.device, non_blocking=True)
        if torch.is_grad_enabled():
            rows.requires_grad_(True)
            self._pending.append((ids, rows))
        return rows

    def zero_grad(self) -> None:
        """Forget the lookups since the last step without updating anything."""
        self._pending.clear()

    @torch.no_grad()
    def step(self, lr: float, weight_decay: float = 0.0) -> Tensor:
        """Sign-SGD on the rows looked up since the last step; returns the updated ids (U,).

        Lookups whose rows got no gradient are skipped. Rows not looked up are untouched (no decay).
        """
        pending = [(i.to(self.device), r.grad) for i, r in self._pending if r.grad is not None]
        self._pending.clear()
        if pending:
            ids, grads = sum_rows(torch.cat([i for i, _ in pending]), torch.cat([g.float() for _, g in pending]))
        else:
            ids = torch.zeros(0, dtype=torch.long, device=self.device)
            grads = torch.zeros(0, self.dim, device=self.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank must call this, even with nothing to contribute, or the collectives hang.
            ids, grads = all_reduce_rows(ids, grads)
        ids, grads = ids.to(self.weight.device), grads.to(self.weight.device)
        if ids.numel():
            rows = self.weight[ids]
            rows.mul_(1 - lr * weight_decay).add_(torch.sign(grads), alpha=-lr)
            self.weight[ids] = rows
        return ids

    def mean_row(self) -> Tensor:
        """The mean of all rows (dim,); zeros for an empty table."""
        if self.num_ids == 0:
            return self.weight.new_zeros(self.dim)
        return self.weight.mean(0)

    def add_rows(self, count: int) -> range:
        """Append ``count`` rows initialised at the mean of the existing rows; returns their ids."""
        start = self.num_ids
        new = self.mean_row().expand(count, self.dim)
        self.weight = self._place(torch.cat([self.weight, new], dim=0))
        return range(start, start + count)

    def state_dict(self) -> dict[str, Tensor]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Replace the table (shape may differ, e.g. after add_rows); keeps this object's device and storage."""
        self.weight = self._place(state["weight"].detach().to(dtype=torch.float32).clone())
        self._pending.clear()
