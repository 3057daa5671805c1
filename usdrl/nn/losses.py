"""Multi-grained feature decorrelation (paper Eqs. 7-13; SPEC.md 4), as small pure functions.

``mgfd_loss`` returns every named term per domain (t temporal, s spatial, i instance), the weighted
sums over domains and ``total``. Two forms:
- ``"released"`` (default, produced the published numbers): similarity of views 0..K-2 to the last
  view and to their centre, variance + auto-covariance per view, cross-correlation over view pairs;
- ``"paper"`` (Eq. 8 and 12): consistency averaged over views (MSE to the mean of all K views plus the
  invariance tr(I - z_a^T z_b) over ordered pairs), separability = variance, auto-covariance and the
  off-diagonal cross-correlation over pairs.
Standardisation divides by sqrt(var + epsilon), so a constant column gives a finite loss and gradient
(the released code divides by the std and gives NaN).
The weights and constants and their defaults are ``usdrl.settings.params.LossSection``'s (params.yaml ``loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from usdrl.settings.sections import LossSection

DOMAINS = ("t", "s", "i")
STANDARDISE_EPSILON = 1e-12


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix (D, D), flattened (D*(D-1),)."""
    size = matrix.shape[0]
    if matrix.shape != (size, size):
        raise ValueError(f"expected a square matrix, got {tuple(matrix.shape)}")
    return matrix.flatten()[:-1].view(size - 1, size + 1)[:, 1:].flatten()


def similarity_loss(views: list[torch.Tensor]) -> torch.Tensor:
    """Released similarity: sum_a MSE(z_a, z_last) + sum_a MSE(z_a, c), a < K-1, c = mean of those views."""
    anchor, others = views[-1], views[:-1]
    centre = torch.stack(others).mean(dim=0)
    return sum(F.mse_loss(z, anchor) for z in others) + sum(F.mse_loss(z, centre) for z in others)


def variance_loss(z: torch.Tensor, epsilon: float = LossSection.epsilon, target: float = 1.0) -> torch.Tensor:
    """Eq. 9: mean_j ReLU(target - sqrt(Var(z[:, j]) + epsilon)), unbiased variance; z (N, D)."""
    return torch.relu(target - torch.sqrt(z.var(dim=0) + epsilon)).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Eq. 10: (1/D) sum_{i != j} Cov(z)_ij^2, unbiased covariance; z (N, D)."""
    batch, dimension = z.shape
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (batch - 1)
    return off_diagonal(covariance).pow(2).sum() / dimension


def variance_covariance_loss(z: torch.Tensor, variance_weight: float = LossSection.variance_weight,
                             epsilon: float = LossSection.epsilon) -> torch.Tensor:
    """The released VAC term of one view: variance_weight * variance + covariance."""
    return variance_weight * variance_loss(z, epsilon) + covariance_loss(z)


def standardise(z: torch.Tensor, epsilon: float = STANDARDISE_EPSILON) -> torch.Tensor:
    """Per column: (z - mean) / sqrt(unbiased var + epsilon); a constant column becomes 0, not NaN."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0) + epsilon)


def cross_correlation_matrix(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """C = standardise(z_a)^T standardise(z_b) / N: (D, D)."""
    return standardise(z_a).T @ standardise(z_b) / z_a.shape[0]


def cross_correlation_loss(z_a: torch.Tensor, z_b: torch.Tensor,
                           off_diagonal_weight: float = LossSection.off_diagonal_weight) -> torch.Tensor:
    """Released XC of a pair: sum_i (C_ii - 1)^2 + off_diagonal_weight * sum_{i != j} C_ij^2."""
    correlation = cross_correlation_matrix(z_a, z_b)
    on = (torch.diagonal(correlation) - 1).pow(2).sum()
    return on + off_diagonal_weight * off_diagonal(correlation).pow(2).sum()


def invariance_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Eq. 8 invariance: tr(I - C) with C the cross-correlation of the standardised views."""
    return (1 - torch.diagonal(cross_correlation_matrix(z_a, z_b))).sum()


def redundancy_loss(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Eq. 11: sum_{i != j} C_ij^2."""
    return off_diagonal(cross_correlation_matrix(z_a, z_b)).pow(2).sum()


def pairs(count: int) -> list[tuple[int, int]]:
    """Every pair (a, b) of ``count`` views with a < b."""
    return [(a, b) for a in range(count) for b in range(a + 1, count)]


def released_domain_terms(views: list[torch.Tensor], variance_weight: float, off_diagonal_weight: float,
                          epsilon: float) -> dict[str, torch.Tensor]:
    """The released code's terms of one domain before the terms are weighted: the similarity of the views, the
    variance-covariance term of each view and the cross-correlation term of every pair of views."""
    return {
        "similarity": similarity_loss(views),
        "variance_covariance": sum(variance_covariance_loss(z, variance_weight, epsilon) for z in views),
        "cross_correlation": sum(cross_correlation_loss(views[a], views[b], off_diagonal_weight)
                                 for a, b in pairs(len(views))),
    }


def paper_domain_terms(views: list[torch.Tensor], variance_weight: float, epsilon: float) -> dict[str, torch.Tensor]:
    """Eq. 8 and Eq. 12 before weighting: similarity and invariance averaged over views."""
    count = len(views)
    mean = torch.stack(views).mean(dim=0)
    return {
        "similarity": sum(F.mse_loss(z, mean) for z in views) / count,
        "invariance": sum(invariance_loss(views[a], views[b]) for a in range(count) for b in range(count) if a != b) / count,
        "variance_covariance": sum(variance_covariance_loss(z, variance_weight, epsilon) for z in views),
        "cross_correlation": sum(redundancy_loss(views[a], views[b]) for a, b in pairs(count)),
    }


def mgfd_loss(z_t: list[torch.Tensor], z_s: list[torch.Tensor], z_i: list[torch.Tensor],
              settings: LossSection = LossSection()) -> dict[str, torch.Tensor]:
    """Every named term and ``total`` = sum over terms of weight * (term_i + tau (term_t + term_s)).

    Each of z_t, z_s, z_i is the list of K views' projections (N, D). ``settings``: the form, weights and
    constants (params.yaml ``loss``). Paper form: cross_correlation_weight is lambda of Eq. 12 times
    off_diagonal_weight, invariance_weight is eta of Eq. 8.
    """
    if not len(z_t) == len(z_s) == len(z_i) >= 2:
        raise ValueError(f"each domain needs the same number (>= 2) of views; got {len(z_t)}, {len(z_s)}, {len(z_i)}")
    for views in (z_t, z_s, z_i):
        if any(z.ndim != 2 or z.shape[0] < 2 for z in views):
            raise ValueError("projections must be (N, D) with N >= 2 (batch statistics need two samples)")
    if settings.form == "released":
        terms = {d: released_domain_terms(v, settings.variance_weight, settings.off_diagonal_weight, settings.epsilon)
                 for d, v in zip(DOMAINS, (z_t, z_s, z_i))}
        weights = {"similarity": settings.similarity_weight, "variance_covariance": settings.variance_covariance_weight,
                   "cross_correlation": settings.cross_correlation_weight}
    elif settings.form == "paper":
        terms = {d: paper_domain_terms(v, settings.variance_weight, settings.epsilon)
                 for d, v in zip(DOMAINS, (z_t, z_s, z_i))}
        weights = {"similarity": settings.similarity_weight, "invariance": settings.invariance_weight,
                   "variance_covariance": settings.variance_covariance_weight,
                   "cross_correlation": settings.cross_correlation_weight * settings.off_diagonal_weight}
    else:
        raise ValueError(f"unknown loss form {settings.form!r}; choose released or paper")
    result: dict[str, torch.Tensor] = {}
    total = z_i[0].new_zeros(())
    for name, weight in weights.items():
        for domain in DOMAINS:
            result[f"{name}_{domain}"] = terms[domain][name]
        combined = terms["i"][name] + settings.tau * (terms["t"][name] + terms["s"][name])
        result[name] = combined
        total = total + weight * combined
    result["total"] = total
    return result
