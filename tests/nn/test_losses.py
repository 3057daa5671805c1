import pytest
import torch

from usdrl.nn.losses import cross_correlation_loss, mgfd_loss, off_diagonal, variance_covariance_loss
from usdrl.settings.sections import LossSection

RELEASED_NAMES = {"sim": "similarity", "vac": "variance_covariance", "xcorr": "cross_correlation"}


def _ours(name: str) -> str:
    base, _, domain = name.partition("_")
    return RELEASED_NAMES[base] + (f"_{domain}" if domain else "") if base in RELEASED_NAMES else name


def test_matches_released_values(shared):
    reference = torch.load(shared / "reference" / "loss_values.pt", weights_only=True)
    weights = reference["weights"]
    settings = LossSection(similarity_weight=weights["sim"], variance_covariance_weight=weights["vac"],
                           cross_correlation_weight=weights["xcorr"], tau=weights["tau"])
    values = mgfd_loss(reference["z"]["t"], reference["z"]["s"], reference["z"]["i"], settings)
    for name, expected in reference["values"].items():
        assert abs(values[_ours(name)].item() / expected.item() - 1) <= 1e-4, name


def test_off_diagonal():
    matrix = torch.arange(9.0).view(3, 3)
    assert off_diagonal(matrix).tolist() == [1, 2, 3, 5, 6, 7]


def test_constant_column_gives_finite_loss_and_gradient():
    views = [torch.randn(16, 8, requires_grad=True) for _ in range(4)]
    constant = [v.detach().clone() for v in views]
    for v in constant:
        v[:, 3] = 1.0
        v.requires_grad_(True)
    values = mgfd_loss(constant, constant, constant)
    assert torch.isfinite(values["total"])
    values["total"].backward()
    assert all(torch.isfinite(v.grad).all() for v in constant)


def test_collapse_is_penalised():
    torch.manual_seed(0)
    healthy = [torch.randn(64, 32) for _ in range(4)]
    collapsed = [torch.ones(64, 32) + 1e-3 * torch.randn(64, 32) for _ in range(4)]
    assert variance_covariance_loss(collapsed[0]) > variance_covariance_loss(healthy[0]) + 3
    base = torch.randn(64, 32)
    aligned = [base + 0.01 * torch.randn(64, 32) for _ in range(4)]
    assert mgfd_loss(collapsed, collapsed, collapsed)["total"] > mgfd_loss(aligned, aligned, aligned)["total"]
    assert cross_correlation_loss(aligned[0], aligned[1]) < cross_correlation_loss(healthy[0], healthy[1])


@pytest.mark.parametrize("form", ["released", "paper"])
@pytest.mark.parametrize("views", [2, 4, 6])
def test_gradient_descent_lowers_the_loss(form, views):
    torch.manual_seed(1)
    projections = [torch.randn(32, 16, requires_grad=True) for _ in range(views)]
    optimiser = torch.optim.Adam(projections, lr=0.05)
    first = None
    for _ in range(60):
        optimiser.zero_grad()
        loss = mgfd_loss(projections, projections, projections, LossSection(form=form))["total"]
        first = loss.item() if first is None else first
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.7 * first


def test_paper_form_terms_and_argument_errors():
    views = [torch.randn(8, 4) for _ in range(3)]
    values = mgfd_loss(views, views, views, LossSection(form="paper", tau=0.0))
    assert {"invariance_i", "similarity_t", "total"} <= set(values)
    # tau = 0: the temporal and spatial terms do not count
    assert torch.isclose(values["similarity"], values["similarity_i"])
    with pytest.raises(ValueError, match="same number"):
        mgfd_loss(views[:1], views[:1], views[:1])
    with pytest.raises(ValueError, match="unknown loss form"):
        mgfd_loss(views, views, views, LossSection(form="vicreg"))
