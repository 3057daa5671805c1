import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from conftest import REPOSITORY
from usdrl.cli import load_settings, main
from usdrl.config import ConfigError, Params, load_params, to_dict


def _arguments(params=None, profile=None, overrides=()):
    return argparse.Namespace(params=params, profile=profile, set=list(overrides))


def test_the_package_defaults_and_the_repository_params_pass_their_own_checks():
    assert load_params(None) == Params()
    for section, values in to_dict(Params()).items():
        for key, value in (values.items() if isinstance(values, dict) else []):
            # every default value, given back as an override (JSON is YAML), is accepted unchanged
            assert load_params(None, overrides=[f"{section}.{key}={json.dumps(value)}"]) == Params()
    demo = load_params(REPOSITORY / "params.yaml", "demo")
    assert demo.model.hidden_size == 64 and demo.augment.crop_scale == (0.1, 1.0)
    assert isinstance(demo.pretrain.learning_rate, float) and demo.pretrain.milestones == (5,)
    assert load_params(REPOSITORY / "params.yaml", "paper").model.hidden_size == 1024


def test_a_missing_params_file_given_explicitly_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml here
    assert load_settings(_arguments(), {}) == Params()  # the default file missing: the package defaults
    with pytest.raises(ConfigError, match="params file paramz.yaml does not exist"):
        load_settings(_arguments(params=Path("paramz.yaml")), {})
    code = main(["probe", "--data", "d", "--benchmark", "xsub", "--checkpoint", "random", "--out", "r.json",
                 "--params", "paramz.yaml"])
    error = capsys.readouterr().err
    assert code == 2 and "paramz.yaml does not exist" in error and len(error.strip().splitlines()) == 1
    (tmp_path / "params.yaml").write_text("model:\n  hidden_size: 32\n")
    assert load_settings(_arguments(), {}).model.hidden_size == 32  # ./params.yaml when present


@pytest.mark.parametrize("override, message", [
    ("model.hidden_size=abc", "--set model.hidden_size=abc: model.hidden_size must be an integer, got 'abc'"),
    ("model.hidden_size=2.5", "model.hidden_size must be an integer"),
    ("model.hidden_size=true", "model.hidden_size must be an integer"),
    ("model.alpha=high", "model.alpha must be a number"),
    ("model.backbone=3", "model.backbone must be a string"),
    ("detection.random_offset=1", "detection.random_offset must be true or false"),
    ("augment.crop_scale=[0.1, 0.5, 1.0]", r"augment.crop_scale must be a list of 2 values"),
    ("pretrain.milestones=[100, x]", r"pretrain.milestones\[1\] must be an integer, got 'x'"),
    ("pretrain.milestones=100", "pretrain.milestones must be a list of integers, got 100"),
    ("probe.learning_rates=0.1", "probe.learning_rates must be a mapping"),
    ("model=3", "model must be a mapping"),
    ("model.hiden_size=8", "unknown key 'model.hiden_size'; did you mean 'hidden_size'"),
    ("data.synthetic.subject=8", "unknown key 'data.synthetic.subject'; did you mean 'subjects'"),
    ("modle.hidden_size=8", "unknown key 'modle'; did you mean 'model'"),
    ("pretrain.epochs", "must look like section.key=value"),
])
def test_every_value_is_checked_against_its_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_params(None, overrides=[override])


def test_accepted_values_take_the_field_type():
    params = load_params(None, overrides=["pretrain.learning_rate=1", "loss.tau=1e-3", "pretrain.milestones=[10, 20]",
                                          "data.synthetic.seed=4", "probe.learning_rates={default: 0.5}"])
    assert params.pretrain.learning_rate == 1.0 and isinstance(params.pretrain.learning_rate, float)
    assert params.loss.tau == 0.001  # YAML reads 1e-3 as text
    assert params.pretrain.milestones == (10, 20) and params.data.synthetic.seed == 4
    assert params.probe.learning_rate("dste", "ntu60", "xsub") == 0.5


def test_a_bad_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  hidden_size: big\n")
    with pytest.raises(ConfigError, match=r"params.yaml: model.hidden_size must be an integer, got 'big'"):
        load_params(path)
    path.write_text("profiles:\n  small:\n    model: {hidden: 8}\n")
    with pytest.raises(ConfigError, match=r"profile small\): unknown key 'model.hidden'; did you mean 'hidden_size'"):
        load_params(path, "small")
    path.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(path)


def test_an_unknown_profile_lists_each_profile_once(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profiles:\n  paper: {}\n  demo: {}\n")
    with pytest.raises(ConfigError) as error:
        load_params(path, "dmeo")
    assert str(error.value).endswith("known: demo, paper")


def test_nested_sections_come_from_the_type_hints():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        size: int = 1

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)

    from usdrl.config import _build

    assert _build(Outer, {"inner": {"size": 3}}, "", lambda key: "test").inner == Inner(3)
    with pytest.raises(ConfigError, match="inner.size must be an integer"):
        _build(Outer, {"inner": {"size": "x"}}, "", lambda key: "test")
