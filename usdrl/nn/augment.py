"""Pretraining views made on whole batches, on the batch's device, with explicit generators (SPEC.md 2).

The released feeder augments one sample at a time in NumPy; the same distributions here are drawn
per sample for a whole batch at once:
1. temporal crop-resize: s ~ U(0.1, 1), L = clip(floor(n s), 64, n), start ~ U{0..n-L}, linear
   resize of the crop to the clip length (align_corners=False, as ``F.interpolate``);
2. one spatial augmentation, each with probability 1/2: joint corruption (15 joints zeroed, or
   multiplied by one random C x C matrix, each with probability 1/2) or shear (diagonal 1,
   off-diagonal U(-1, 1)).
"""

from __future__ import annotations

import torch

from usdrl.settings.sections import AugmentSection


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def resize_frames(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, output_frames: int,
                  sample: torch.Tensor | None = None) -> torch.Tensor:
    """Linear resize of frames [start, start + length) of each sample to ``output_frames``.

    x (N, C, T, V, M), start and length (N',) integers -> (N', C, output_frames, V, M); ``sample`` (N',)
    says which sample of x each output is cut from (default: output i from sample i), so K views of a batch
    need no K copies of it. Same source positions as ``F.interpolate(mode="linear", align_corners=False)``.
    """
    length_float = length.to(torch.float32).unsqueeze(1)  # (N', 1)
    target = torch.arange(output_frames, device=x.device, dtype=torch.float32).unsqueeze(0)  # (1, T')
    source = ((target + 0.5) * (length_float / output_frames) - 0.5).clamp(min=0)  # (N', T')
    lower = source.floor().to(torch.long)
    lower = torch.minimum(lower, (length - 1).unsqueeze(1))
    upper = torch.minimum(lower + 1, (length - 1).unsqueeze(1))
    weight = (source - lower.to(torch.float32)).to(x.dtype)  # (N', T')
    rows = (torch.arange(len(start), device=x.device) if sample is None else sample).unsqueeze(1)  # (N', 1)
    frames_first = x.transpose(1, 2)  # (N, T, C, V, M), a view
    lower_frames = frames_first[rows, start.unsqueeze(1) + lower]  # (N', T', C, V, M)
    upper_frames = frames_first[rows, start.unsqueeze(1) + upper]
    resized = lower_frames + (upper_frames - lower_frames) * weight[:, :, None, None, None]
    return resized.transpose(1, 2)  # (N', C, T', V, M)


def resize_whole(x: torch.Tensor, num_frames: torch.Tensor, output_frames: int = 64) -> torch.Tensor:
    """The deterministic downstream input: the whole valid sequence resized; (N, C, T, V, M) -> (N, C, T', V, M)."""
    num_frames = num_frames.to(x.device).clamp(min=1)
    return resize_frames(x, torch.zeros_like(num_frames), num_frames, output_frames)


def random_crop_resize(x: torch.Tensor, num_frames: torch.Tensor, generator: torch.Generator, augment: AugmentSection,
                       clip_frames: int, sample: torch.Tensor | None = None) -> torch.Tensor:
    """Step 1 for a batch: (N, C, T, V, M) with valid lengths (N,) -> (N, C, clip_frames, V, M); with ``sample``
    (N',), one crop per entry, of sample ``sample[i]`` of x (num_frames then (N',)).

    ``augment`` gives the crop range (``crop_scale``) and the shortest crop (``minimum_crop``); ``clip_frames``
    is the model's clip length (``ModelSection.clip_frames``)."""
    batch = x.shape[0] if sample is None else len(sample)
    frames = num_frames.to(x.device).clamp(min=1)
    scale = _uniform((batch,), *augment.crop_scale, generator, x.device)
    length = torch.floor(frames.to(torch.float32) * scale).to(torch.long)
    length = torch.minimum(length.clamp(min=augment.minimum_crop), frames)
    start = torch.floor(torch.rand(batch, generator=generator, device=x.device) * (frames - length + 1)).to(torch.long)
    start = torch.minimum(start, frames - length)  # guards the rand() == 1 - ulp edge
    return resize_frames(x, start, length, clip_frames, sample)


def joint_corruption(x: torch.Tensor, generator: torch.Generator, corrupted_joints: int = 15) -> torch.Tensor:
    """Per sample: ``corrupted_joints`` joints zeroed (p = 1/2) or multiplied by a random C x C matrix."""
    batch, channels, _, joints, _ = x.shape
    if corrupted_joints > joints:
        raise ValueError(f"cannot corrupt {corrupted_joints} of {joints} joints; lower corrupted_joints")
    chosen = torch.rand((batch, joints), generator=generator, device=x.device).argsort(dim=1)[:, :corrupted_joints]
    mask = torch.zeros((batch, joints), dtype=torch.bool, device=x.device).scatter_(1, chosen, True)
    matrix = _uniform((batch, channels, channels), -1.0, 1.0, generator, x.device).to(x.dtype)
    zero_them = torch.rand(batch, generator=generator, device=x.device) < 0.5
    # released: joint (row vector) times matrix, i.e. x'_d = sum_c x_c * matrix[c, d]
    transformed = torch.einsum("nctvm,ncd->ndtvm", x, matrix)
    replacement = torch.where(zero_them.view(batch, 1, 1, 1, 1), torch.zeros_like(x), transformed)
    return torch.where(mask.view(batch, 1, 1, joints, 1), replacement, x)


def shear(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x' = S x per sample, S with unit diagonal and off-diagonal entries U(-1, 1)."""
    batch, channels = x.shape[:2]
    matrix = _uniform((batch, channels, channels), -1.0, 1.0, generator, x.device).to(x.dtype)
    matrix = matrix * (1 - torch.eye(channels, device=x.device, dtype=x.dtype)) + torch.eye(channels, device=x.device, dtype=x.dtype)
    return torch.einsum("ndc,nctvm->ndtvm", matrix, x)


def spatial_augment(x: torch.Tensor, generator: torch.Generator, corrupted_joints: int = 15) -> torch.Tensor:
    """Step 2: joint corruption or shear, each with probability 1/2, chosen per sample."""
    use_corruption = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    corrupted = joint_corruption(x, generator, corrupted_joints)
    sheared = shear(x, generator)
    return torch.where(use_corruption.view(-1, 1, 1, 1, 1), corrupted, sheared)


def make_views(x: torch.Tensor, num_frames: torch.Tensor, generator: torch.Generator, augment: AugmentSection,
               clip_frames: int) -> torch.Tensor:
    """K independent views of a batch in one call: (N, C, T, V, M) -> (K, N, C, clip_frames, V, M).

    K is ``augment.views``; ``clip_frames`` is the model's clip length (``ModelSection.clip_frames``)."""
    batch = x.shape[0]
    sample = torch.arange(batch, device=x.device).repeat(augment.views)  # (K*N,): view k of sample n at k*N + n
    cropped = random_crop_resize(x, num_frames.to(x.device)[sample], generator, augment, clip_frames,
                                 sample)  # every view drawn independently
    views = spatial_augment(cropped, generator, augment.corrupted_joints)
    return views.view(augment.views, batch, *views.shape[1:])
