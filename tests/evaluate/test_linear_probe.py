"""The linear probe is robust to the scale of the features it is given (issue: real captures diverged)."""

import numpy as np
import pytest

from usdrl.evaluate.linear import train_linear_probe
from usdrl.settings.sections import ProbeSection


def _features(seed: int, classes: int = 10, per_class: int = 40, dimensions: int = 128):
    """Class clusters in a 128-dimensional space with correlated, unequally scaled dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dimensions))
    mixing = rng.normal(size=(dimensions, dimensions)) * rng.uniform(0.1, 3.0, size=dimensions)
    labels = np.repeat(np.arange(classes), per_class)
    features = (centres[labels] + 3.0 * rng.normal(size=(len(labels), dimensions))) @ mixing
    return features.astype(np.float32), labels


@pytest.mark.parametrize("normalization", ["center_scale", "standardize"])
def test_normalised_probe_gives_the_same_accuracy_for_scaled_and_shifted_features(normalization):
    all_x, all_y = _features(2)
    order = np.random.default_rng(3).permutation(len(all_y))
    train, test = order[:300], order[300:]
    settings = ProbeSection(epochs=40, batch_size=64, milestones=(28, 36), feature_normalization=normalization)
    original = train_linear_probe(all_x[train], all_y[train], all_x[test], all_y[test], 10, settings, 1.0)
    moved = train_linear_probe(100 * all_x[train] + 50, all_y[train], 100 * all_x[test] + 50, all_y[test], 10, settings,
                               1.0)
    assert original["metrics"]["top1"] > 0.5  # it learns (chance 0.1)
    assert abs(original["metrics"]["top1"] - moved["metrics"]["top1"]) <= 0.01
    for result in (original, moved):
        losses = [record["train_loss"] for record in result["history"]]
        half = len(losses) // 2
        assert max(losses[half:]) <= losses[half] + 1e-3, "the training loss rose over the last half of the schedule"


def test_unknown_normalisation_is_refused():
    x, y = _features(0, classes=2, per_class=5, dimensions=4)
    with pytest.raises(ValueError, match="standardize"):
        train_linear_probe(x, y, x, y, 2, ProbeSection(epochs=1, feature_normalization="whiten"), 0.006)
