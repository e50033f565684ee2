"""Training across processes (``torchrun``): the process group, and gathering a batch's rows.

Each rank holds its share of one global PK batch (:class:`san.data.sampler.PKSampler`).
Batch-hard mining needs every rank's embeddings: :func:`gather_rows` concatenates them in
rank order and sends each rank the gradient of its own rows summed over all ranks' losses.
Every rank computes the same global triplet loss, DDP averages the parameter gradients over
the ranks, so the step is the 1-process step on the global batch.

BatchNorm statistics are global too (:class:`GlobalBatchNorm`, what SyncBatchNorm does,
on any device and backend; PyTorch's SyncBatchNorm refuses CPU tensors). A rank holds only
P/W identities: normalising each rank by its own few identities changes the features the
triplet loss sees (the first step's loss of a 2-process P=2 run was 2.73 against 2.11 with
global statistics, on the test set-up), so per-rank statistics would make the paper's
P x K recipe mean something else on every process count. With both, W processes of P/W
identities take the same steps as one process of P, up to the order of float sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class DistContext:
    """This process's place in the process group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def everywhere(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on every rank (ranks must agree to skip a DDP step)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor(float(flag), device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group when RANK and WORLD_SIZE say there is one (gloo on the
    CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world <= 1:
        return DistContext()
    cuda = device != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _gather(x: Tensor) -> tuple[Tensor, list[int]]:
    """Every rank's rows of ``x`` in rank order (padded to the largest count for the transfer)
    and the row count of each rank."""
    sizes = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(x)], dtype=torch.int64, device=x.device))
    counts = [int(size.item()) for size in sizes]
    padded = torch.zeros((max(counts), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: len(x)] = x.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts)]), counts


class _GatherRows(torch.autograd.Function):
    """All ranks' rows in rank order; backward: this rank's rows of the gradient summed over ranks."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        rows, counts = _gather(x)
        ctx.counts, ctx.rank = counts, dist.get_rank()  # type: ignore[attr-defined]
        return rows

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on every row
        start = sum(ctx.counts[: ctx.rank])  # type: ignore[attr-defined]
        return grad[start : start + ctx.counts[ctx.rank]]  # type: ignore[attr-defined]


def gather_rows(x: Tensor) -> Tensor:
    """Every rank's rows of ``x`` (rank order; ranks may hold different counts); differentiable
    for floating-point tensors."""
    return _GatherRows.apply(x) if x.is_floating_point() else _gather(x)[0]


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks; every rank's input reaches every rank's output, so the gradient is
    the sum over ranks too."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d, 2d or 3d input) whose training statistics and running averages cover the
    batch of all ranks; outside training or a process group it is plain BatchNorm."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N x C x ...), got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1, *[1] * (x.dim() - 2))
        count = _AllReduceSum.apply(torch.tensor([float(x.numel() // x.shape[1])], dtype=x.dtype, device=x.device))
        mean = _AllReduceSum.apply(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = cast(Tensor, self.num_batches_tracked)
                tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * count / (count - 1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def globalise_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d/2d/3d replaced by a :class:`GlobalBatchNorm` with the
    same parameters and buffers (the state dict keeps its keys)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) in (nn.BatchNorm1d, nn.BatchNorm2d,
                                                                                  nn.BatchNorm3d):
        replacement = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats, device=module.running_mean.device
                                      if module.running_mean is not None else None)
        replacement.load_state_dict(module.state_dict())
        if module.affine:
            replacement.weight, replacement.bias = module.weight, module.bias
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, globalise_batchnorm(child))
    return module
