"""The pieces every training loop shares (usdrl/training/loop.py): schedules, head initialisation, the step, the totals."""

import math

import pytest
import torch
import torch.nn as nn

from usdrl.nn.encoders import initialise_head
from usdrl.training.loop import (
    MixedPrecision,
    RunningTotals,
    set_learning_rate,
    step_decay_rate,
    warmup_cosine_rate,
)


def test_step_decay_multiplies_by_the_decay_from_each_milestone():
    rates = [step_decay_rate(0.5, 0.1, (2, 4), epoch) for epoch in range(6)]
    assert rates == [0.5, 0.5, 0.5 * 0.1, 0.5 * 0.1, 0.5 * 0.1 ** 2, 0.5 * 0.1 ** 2]


def test_warmup_then_cosine_down_to_zero():
    rates = [warmup_cosine_rate(1.0, step, 4, 12) for step in range(12)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert rates[4] == 1.0 and rates[8] == pytest.approx(0.5) and rates[-1] == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(later <= earlier for earlier, later in zip(rates[4:], rates[5:]))
    assert warmup_cosine_rate(1.0, 12, 4, 12) == pytest.approx(0.0, abs=1e-12)  # zero at total_steps


def test_set_learning_rate_keeps_each_groups_scale():
    first, second = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    scaled = torch.optim.SGD([{"params": [first], "lr_scale": 0.5}, {"params": [second], "lr_scale": 1.0}], lr=1.0)
    set_learning_rate(scaled, 0.2)
    assert [group["lr"] for group in scaled.param_groups] == [0.1, 0.2]
    plain = torch.optim.SGD([first], lr=1.0)
    set_learning_rate(plain, 0.3)
    assert plain.param_groups[0]["lr"] == 0.3


def test_a_head_starts_from_normal_weights_and_zero_bias_drawn_from_the_generator_given():
    head = initialise_head(nn.Linear(16, 5), torch.Generator().manual_seed(3))
    expected = torch.empty(5, 16).normal_(0.0, 0.01, generator=torch.Generator().manual_seed(3))
    assert torch.equal(head.weight, expected) and torch.equal(head.bias, torch.zeros(5))
    torch.manual_seed(4)
    from_global = initialise_head(nn.Linear(16, 5))  # no generator: the global one, as nn.init.normal_ draws
    torch.manual_seed(4)
    reference = nn.Linear(16, 5)
    nn.init.normal_(reference.weight, std=0.01)
    assert torch.equal(from_global.weight, reference.weight)


@pytest.mark.parametrize("scaled", [False, True])
def test_the_step_is_backward_and_an_optimiser_step_with_or_without_a_scaler(scaled):
    def trained(use_helper: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        mixed_precision = MixedPrecision(torch.device("cpu"), "fp32")
        mixed_precision.scaler = torch.amp.GradScaler("cpu", enabled=scaled)  # fp16's scaler, here on the CPU
        for _ in range(3):
            with mixed_precision.autocast():
                loss = model(torch.randn(8, 4)).pow(2).mean()
            if use_helper:
                mixed_precision.step(loss, optimizer)
            else:
                optimizer.zero_grad(set_to_none=True)
                mixed_precision.scaler.scale(loss).backward()
                mixed_precision.scaler.step(optimizer)
                mixed_precision.scaler.update()
        return model.weight.detach()

    assert torch.equal(trained(True), trained(False))


def test_precision_settings_come_from_the_runtime_rules():
    assert MixedPrecision(torch.device("cpu"), "auto").dtype is None
    assert MixedPrecision(torch.device("cpu"), "bf16").dtype == torch.bfloat16
    assert not MixedPrecision(torch.device("cpu"), "bf16").scaler.is_enabled()


def test_running_totals_weight_each_value_and_keep_named_ones_at_zero():
    totals = RunningTotals("train_loss", "accuracy")
    assert totals.means(4) == {"train_loss": 0.0, "accuracy": 0.0}
    totals.add(3, train_loss=2.0)
    totals.add(accuracy=5, weight=1.5)  # a value may be called weight
    assert totals.means(2) == {"train_loss": 3.0, "accuracy": 2.5, "weight": 0.75}
