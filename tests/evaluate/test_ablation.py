"""The ablation reuses a run's checkpoint only where training the variant again would give the same weights."""

import dataclasses
import json

import torch
from conftest import TINY_MODEL

from usdrl.evaluate.ablation import LOSS_VARIANTS, ablation_params, reusable_checkpoint
from usdrl.settings.params import ALLOWED
from usdrl.settings.sections import LOSS_VARIANT_NAMES, AblationSection, Params, PretrainSection
from usdrl.training.checkpoint_files import load_checkpoint
from usdrl.training.pretrain import pretrain


def test_the_main_run_stands_in_for_the_variant_with_its_settings_and_only_for_it(synthetic, tmp_path, one_thread):
    main_settings = PretrainSection(epochs=3, batch_size=32, workers=0, device="cpu", checkpoint_every=1,
                                    log_every=0, milestones=(2,))
    params = Params(model=TINY_MODEL, pretrain=main_settings,
                    ablation=AblationSection(epochs=2, milestones=(2,)))
    pretrain(synthetic, "xview", tmp_path / "main", params.model, settings=main_settings, progress=False)
    fingerprint = json.loads((synthetic / "manifest.json").read_text())["input_fingerprint"]

    variant = ablation_params(params, {}, {})  # alpha 0.5 and the full loss: the main run's settings, 2 epochs
    found = reusable_checkpoint([tmp_path / "elsewhere", tmp_path / "main"], variant, fingerprint, "xview")
    assert found == tmp_path / "main" / "checkpoints" / "checkpoint_0002.pt"
    pretrain(synthetic, "xview", tmp_path / "variant", variant.model, variant.augment, variant.loss,
             variant.pretrain, progress=False)  # what the ablation would otherwise train
    saved_less_often = dataclasses.replace(variant, pretrain=dataclasses.replace(variant.pretrain, last_checkpoint_seconds=20.0))
    assert reusable_checkpoint([tmp_path / "main"], saved_less_often, fingerprint, "xview") == found  # when, not what
    reused, trained = load_checkpoint(found)["model"], load_checkpoint(tmp_path / "variant" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(tensor, trained[name]) for name, tensor in reused.items())

    other_alpha = ablation_params(params, {"alpha": 0.25}, {})
    other_loss = ablation_params(params, {}, {"tau": 0.0})
    decayed_earlier = ablation_params(dataclasses.replace(params, ablation=AblationSection(epochs=2, milestones=(1,))),
                                      {}, {})  # a different learning rate in epoch 2
    for different in (other_alpha, other_loss, decayed_earlier):
        assert reusable_checkpoint([tmp_path / "main"], different, fingerprint, "xview") is None
    assert reusable_checkpoint([tmp_path / "main"], variant, "another dataset", "xview") is None
    assert reusable_checkpoint([tmp_path / "main"], variant, fingerprint, "xsub") is None


def test_the_loss_variants_that_params_yaml_may_name_are_those_the_ablation_runs():
    assert tuple(LOSS_VARIANTS) == LOSS_VARIANT_NAMES == AblationSection().loss_variants
    assert ALLOWED[(AblationSection, "loss_variants")].choices == LOSS_VARIANT_NAMES
