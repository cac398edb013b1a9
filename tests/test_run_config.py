"""Typed run configs: the packaged YAML files, the override grammar and its rules, one-line errors for every
section, and the round trip YAML -> object -> dict -> object."""
import json

import pytest
import yaml

from e2vpt_viz.experiments.config import (CONFIG_DIR, BackboneConfig, DataConfig, PruneConfig, RunConfig,
                                          load_run_config, packaged_configs, parse_override)
from e2vpt_viz.methods import E2VPTConfig, LinearConfig, LoRAConfig, VPTConfig
from e2vpt_viz.training import TrainConfig


def test_packaged_configs_load_as_typed_sections():
    assert {"starter", "cub_e2vpt"} <= set(packaged_configs())
    cub = load_run_config("cub_e2vpt")
    assert cub.method == E2VPTConfig(num_prompts=5, num_kv_prompts=5, dropout=0.1)
    assert cub.train == TrainConfig(epochs=100, warmup_epochs=10, schedule="epoch", batch_size=128, base_lr=1.0,
                                    weight_decay=0.001, optimizer="sgd", seed=42)  # the official per-epoch schedule
    assert load_run_config("starter").train.schedule == "step"
    assert cub.data == DataConfig(root="data/CUB_200_2011", crop_size=224, num_workers=8)
    assert cub.backbone == BackboneConfig("vit_base_patch16_224.orig_in21k")
    assert cub.prune == PruneConfig() and cub.compare == {} and cub.output_dir == "results/cub/e2vpt"
    starter = load_run_config("starter")
    assert starter.prune.num_tokens == [0, 2, 4] and starter.compare["vpt-deep"] == {"method.num_prompts": 10,
                                                                                     "train.base_lr": 2.5}


def test_overrides_are_read_as_yaml_and_converted_to_the_field_type():
    cfg = load_run_config("starter", ["train.epochs=7", "method.num_prompts=3", "data.cache=false",
                                      "train.base_lr=1e-3", "data.device_budget_mb=null", "prune.num_tokens=[1, 3]"])
    assert (cfg.train.epochs, cfg.method.num_prompts, cfg.data.cache) == (7, 3, False)
    assert cfg.train.base_lr == 0.001 and isinstance(cfg.train.base_lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.data.device_budget_mb is None and cfg.prune.num_tokens == [1, 3]
    assert load_run_config("starter", ["train.base_lr=5"]).train.base_lr == 5.0
    assert load_run_config("starter", ["data.on_device=true"]).data.on_device is True
    assert load_run_config("starter", ["train.compile=eager"]).train.compile == "eager"


def test_values_are_taken_as_written():
    assert parse_override("output_dir=/runs/base #2") == ("output_dir", "/runs/base #2")
    assert load_run_config("starter", ["output_dir=/runs/base #2"]).output_dir == "/runs/base #2"
    assert load_run_config("starter", ["data.root=data/#1"]).data.root == "data/#1"
    assert load_run_config("starter", ["data.root=${oc.env:HOME}"]).data.root == "${oc.env:HOME}"  # no interpolation
    with pytest.raises(ValueError, match=r"train.epochs: Value '5 #x'"):  # not a comment: "5 #x" is no integer
        load_run_config("starter", ["train.epochs=5 #x"])


def test_a_shorter_schedule_keeps_the_warmup_share_unless_warmup_is_given():
    packaged = load_run_config("starter").train
    assert (packaged.epochs, packaged.warmup_epochs) == (100, 10)  # the papers' schedule
    assert load_run_config("starter", ["train.epochs=30"]).train.warmup_epochs == 3
    assert load_run_config("starter", ["train.epochs=2"]).train.warmup_epochs == 0
    assert load_run_config("starter", ["train.epochs=5", "train.warmup_epochs=2"]).train.warmup_epochs == 2
    assert load_run_config("starter", ["train.warmup_epochs=20"]).train.epochs == 100
    with pytest.raises(ValueError, match=r"train.warmup_epochs must be in \[0, epochs\)"):
        load_run_config("starter", ["train.epochs=5", "train.warmup_epochs=5"])
    # the same rule for changes made in code
    assert load_run_config("starter").replace(train={"epochs": 50}).train.warmup_epochs == 5
    assert load_run_config("starter").replace(train={"epochs": 50, "warmup_epochs": 1}).train.warmup_epochs == 1


def test_a_new_method_name_drops_the_old_methods_options():
    cfg = load_run_config("starter", ["method.num_prompts=10", "method.name=vpt-deep"])  # order does not matter
    assert cfg.method == VPTConfig(num_prompts=10, deep=True, dropout=0.1)
    assert load_run_config("starter", ["method.name=linear"]).method == LinearConfig()
    kept = load_run_config("starter", ["method.num_kv_prompts=3", "method.name=e2vpt"]).method
    assert kept == E2VPTConfig(num_prompts=5, num_kv_prompts=3)  # same method: options kept
    starter = load_run_config("starter")
    assert starter.replace(method={"name": "lora", "rank": 4}).method == LoRAConfig(rank=4)
    assert starter.replace(method={"num_prompts": 2}).method == E2VPTConfig(num_prompts=2, num_kv_prompts=5)
    with pytest.raises(ValueError, match="unknown key method.num_kv_prompts; did you mean method.num_prompts"):
        load_run_config("starter", ["method.name=vpt-deep", "method.num_kv_prompts=3"])  # an e2vpt option


def test_compare_presets_start_from_the_method_defaults():
    starter = load_run_config("starter", ["method.dropout=0.3", "train.seed=7"])
    deep = starter.with_presets("vpt-deep")
    assert deep.method == VPTConfig(num_prompts=10, deep=True) and deep.train.base_lr == 2.5
    e2vpt = starter.with_presets("e2vpt")
    assert e2vpt.method.dropout == 0.1 and e2vpt.train.seed == 7  # method reset, the rest kept
    assert starter.with_presets("bias").method.method_name() == "bias"  # no preset: the method's defaults
    with pytest.raises(ValueError, match="compare.lora: unknown key method.rnk; did you mean method.rank"):
        load_run_config("starter", ["compare.lora={method.rnk: 3}"])


@pytest.mark.parametrize("override, message", [
    ("data.rot=x", "unknown key data.rot; did you mean data.root?"),
    ("backbone.pretraind=false", "unknown key backbone.pretraind; did you mean backbone.pretrained?"),
    ("method.num_promts=3", "unknown key method.num_promts; did you mean method.num_prompts?"),
    ("train.base_rl=1", "unknown key train.base_rl; did you mean train.base_lr?"),
    ("prune.scores=abs", "unknown key prune.scores; did you mean prune.score?"),
    ("epochs=5", "unknown key epochs; did you mean train.epochs?"),
    ("outputdir=x", "unknown key outputdir; did you mean output_dir?"),
])
def test_every_section_rejects_unknown_keys_naming_the_closest(override, message):
    with pytest.raises(ValueError) as err:
        load_run_config("starter", [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "train.epochs: Value 'abc' of type 'str' could not be converted to Integer"),
    ("data.crop_size=[1]", "data.crop_size"),
    ("backbone.pretrained=maybe", "backbone.pretrained: Value 'maybe'"),
    ("train.optimizer=adam", "train.optimizer: Invalid value 'adam', expected one of ['sgd', 'adamw', 'vpt-adamw']"),
    ("train.epochs=0", "train.epochs must be a positive integer, got 0"),
    ("method.num_prompts=-2", "method.num_prompts must be a positive integer, got -2"),
    ("method.dropout=1.5", "method.dropout must be a number in [0, 1)"),
    ("method.name=prefix", "Unknown method 'prefix'"),
    ("method.name=vpt-dep", "did you mean vpt-deep?"),
    ("data.on_device=sometimes", "data.on_device must be auto, true or false"),
    ("prune.score=magnitude", "prune.score must be 'signed' or 'abs'"),
    ("prune.sweep_ratios=[0.5,1.0]", "prune.sweep_ratios: A pruning ratio must be a number in [0, 1)"),
    ("prune.num_tokens=[]", "prune.num_tokens must be a non-empty list"),
    ("train.epochs", "must look like section.field=value"),
    ("train.epochs=[1", "not valid YAML"),
])
def test_wrong_types_and_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ValueError) as err:
        load_run_config("starter", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_files_and_changes_in_code_fail_the_same_way(tmp_path):
    data = yaml.safe_load((CONFIG_DIR / "starter.yaml").read_text())
    data["backbone"]["pretraind"] = False
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="unknown key backbone.pretraind; did you mean backbone.pretrained"):
        load_run_config(tmp_path / "bad.yaml")
    del data["backbone"]
    with pytest.raises(ValueError, match="no section 'backbone'"):
        load_run_config(data)
    starter = load_run_config("starter")
    with pytest.raises(ValueError, match="unknown key train.lr; did you mean train.base_lr"):
        starter.replace(train={"lr": 1.0})
    with pytest.raises(ValueError, match="data.on_device must be"):
        starter.replace(data={"on_device": "sometimes"})
    with pytest.raises(AttributeError):  # a config is changed by replace, never in place
        starter.output_dir = "elsewhere"


def test_round_trip_yaml_object_dict_object(tmp_path):
    cfg = load_run_config("starter", ["method.name=vpt-deep", "method.num_prompts=10", "train.epochs=30",
                                      "prune.sweep_ratios=[0, 0.5]", "output_dir=/runs/base #2"])
    plain = cfg.to_dict()
    assert json.loads(json.dumps(plain)) == plain  # what metrics.json stores
    assert plain["method"] == {"name": "vpt-deep", "num_prompts": 10, "dropout": 0.1,
                               "prompt_init": "random"}  # deep is fixed by the name
    assert plain["train"]["warmup_epochs"] == 3 and plain["prune"]["sweep_ratios"] == [0.0, 0.5]
    assert RunConfig.from_dict(plain) == cfg
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(plain))
    assert load_run_config(tmp_path / "run.yaml") == cfg == load_run_config(plain)
    # a config written with defaults left out (as older metrics.json files hold) reads back to the same object
    sparse = {"data": {"root": "data/starter", "synthetic": True, "crop_size": 64, "cache": True, "num_workers": 0},
              "backbone": {"name": "starter-vit"}, "method": {"name": "e2vpt"},
              "train": {"epochs": 100, "warmup_epochs": 10, "batch_size": 32, "base_lr": 5, "weight_decay": 0.0001}}
    full = load_run_config("starter").replace(prune=PruneConfig(), compare={}, output_dir=None)
    assert RunConfig.from_dict(sparse) == full


def test_finished_run_recognises_exactly_its_config(tmp_path):
    from e2vpt_viz.experiments.run import finished_run

    cfg = load_run_config("starter", [f"output_dir={tmp_path}"])
    assert finished_run(cfg) is None  # no metrics.json yet
    (tmp_path / "metrics.json").write_text(json.dumps({"test_acc": 0.5, "config": cfg.to_dict()}))
    assert finished_run(cfg)["test_acc"] == 0.5
    assert finished_run(cfg.replace(train={"base_lr": 2.5})) is None
    assert finished_run(cfg.replace(method={"name": "vpt-deep"})) is None
    sparse = yaml.safe_load((CONFIG_DIR / "starter.yaml").read_text())  # written before defaults were filled in
    sparse["output_dir"] = str(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_acc": 0.5, "config": sparse}))
    assert finished_run(cfg)["test_acc"] == 0.5
    (tmp_path / "metrics.json").write_text(json.dumps({"test_acc": 0.5, "config": {"data": {}}}))
    assert finished_run(cfg) is None  # unreadable config: not this run
