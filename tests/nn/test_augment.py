import torch
import torch.nn.functional as F

from usdrl.nn.augment import (
    joint_corruption,
    make_views,
    random_crop_resize,
    resize_frames,
    resize_whole,
    shear,
    spatial_augment,
)
from usdrl.settings.sections import AugmentSection


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_resize_matches_interpolate():
    x = torch.randn(3, 3, 300, 25, 2)
    start, length = torch.tensor([0, 10, 50]), torch.tensor([100, 64, 7])
    out = resize_frames(x, start, length, 64)
    for i in range(3):
        crop = x[i, :, start[i]:start[i] + length[i]]  # (C, L, V, M)
        flat = crop.permute(0, 2, 3, 1).reshape(1, -1, int(length[i]))
        expected = F.interpolate(flat, size=64, mode="linear", align_corners=False)
        expected = expected.view(3, 25, 2, 64).permute(0, 3, 1, 2)
        assert torch.allclose(out[i], expected, atol=1e-5)


def test_crop_lengths_within_bounds():
    # a sample whose frame t holds the value t reveals which frames were used
    frames = torch.arange(300, dtype=torch.float32).view(1, 1, 300, 1, 1).expand(2000, 3, 300, 25, 2).contiguous()
    num_frames = torch.randint(20, 300, (2000,), generator=_generator())
    out = random_crop_resize(frames, num_frames, _generator(1), AugmentSection(), 64)
    first, last = out[:, 0, 0, 0, 0], out[:, 0, -1, 0, 0]
    assert torch.all(first >= 0) and torch.all(last <= (num_frames - 1).float() + 1e-4)
    span = last - first  # about L * 63/64 for a crop of L frames
    long_enough = num_frames >= 64
    assert torch.all(span[long_enough] >= 64 * 63 / 64 - 1.01)
    assert torch.all(span[~long_enough] <= num_frames[~long_enough].float())
    assert span.max() > 200 and span[long_enough].min() < 70  # the scale really varies


def test_corruption_touches_exactly_fifteen_joints():
    x = torch.randn(500, 3, 8, 25, 2) + 5.0
    out = joint_corruption(x, _generator(), corrupted_joints=15)
    changed = (out != x).any(dim=1).any(dim=1).any(dim=-1)  # (N, V)
    assert torch.all(changed.sum(dim=1) == 15)
    zeroed = (out == 0).all(dim=1).all(dim=1).all(dim=-1).sum(dim=1)
    fraction_zeroed = (zeroed == 15).float().mean()
    assert 0.4 < fraction_zeroed < 0.6


def test_shear_has_unit_diagonal():
    x = torch.zeros(100, 3, 1, 1, 1)
    x[:, 0] = 1.0  # unit x vector: the first column of S
    out = shear(x, _generator())
    assert torch.allclose(out[:, 0, 0, 0, 0], torch.ones(100))
    assert (out[:, 1:].abs() <= 1).all() and out[:, 1:].abs().max() > 0.5


def test_views_reproducible_with_a_seed_and_independent():
    x = torch.randn(6, 3, 300, 25, 2)
    num_frames = torch.tensor([300, 120, 64, 40, 200, 90])
    a = make_views(x, num_frames, _generator(7), AugmentSection(), 64)
    b = make_views(x, num_frames, _generator(7), AugmentSection(), 64)
    c = make_views(x, num_frames, _generator(8), AugmentSection(), 64)
    assert a.shape == (4, 6, 3, 64, 25, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_two_coordinate_layouts():
    x = torch.randn(10, 2, 100, 17, 1)
    views = make_views(x, torch.full((10,), 100), _generator(), AugmentSection(views=2, corrupted_joints=15), 64)
    assert views.shape == (2, 10, 2, 64, 17, 1)
    assert torch.isfinite(spatial_augment(x, _generator())).all()


def test_resize_whole_is_the_identity_on_64_frames():
    x = torch.randn(2, 3, 300, 25, 2)
    assert torch.allclose(resize_whole(x, torch.tensor([64, 64]))[:, :, :64], x[:, :, :64], atol=1e-6)
