"""Process-group plumbing: autograd-aware collectives and the BatchNorm whose statistics span all processes.

In one process (no process group, or a world of one) every function here is the identity and
``GlobalBatchNorm`` is ``nn.BatchNorm1d``.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn as nn


def all_reduce_with_gradients(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes; the backward pass sums the gradients too (autograd-aware collective)."""
    with warnings.catch_warnings():  # marked deprecated without a differentiable replacement yet
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)


def all_gather_with_gradients(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation over processes along dim 0, with gradients flowing back to each part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor), dim=0)


def gather_with_gradients(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every process along dim 0, keeping gradients to each process's part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return all_gather_with_gradients(tensor)


class GlobalBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span all processes (any device, gloo or nccl).

    ``nn.SyncBatchNorm`` refuses CPU tensors; this one reduces the batch sums with autograd-aware
    collectives, so gradients flow to every process's samples. In one process it is BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D)
        """``x`` (N, D) normalised: by the statistics of all processes' batches when training in several."""
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = all_reduce_with_gradients
        x = x.float()  # statistics in float32 under bf16/fp16 autocast, as BatchNorm keeps them
        count = all_reduce(x.new_tensor([float(x.shape[0])]))
        mean = all_reduce(x.sum(dim=0)) / count
        variance = all_reduce((x - mean).pow(2).sum(dim=0)) / count  # biased, as BatchNorm normalises
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 0.1
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(variance.detach() * count / (count - 1), momentum)
            self.num_batches_tracked += 1
        return (x - mean) / torch.sqrt(variance + self.eps) * self.weight + self.bias
