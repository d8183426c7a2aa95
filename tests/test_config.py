"""Typed config: unknown keys with suggestions, wrong types, overrides, cross-field checks, dump round trip."""

import pytest
import yaml

from core.config import apply_overrides, build_config, dump_config, load_config, load_yaml
from core.errors import ConfigError, UnknownComponentError
from core.registries import DATASETS

DEMO = "configs/demo.yml"


def test_demo_config_loads_typed():
    cfg = load_config(DEMO)
    assert cfg.agent.search_space_agent == "ProxylessNAS"
    assert cfg.search_strategy.population == 12 and cfg.train.batch_size == 32
    assert cfg.search_space.stages == ((24, 2, 1), (32, 2, 2), (48, 2, 1))
    assert isinstance(cfg.train.optimizer.weight_decay, float)


def test_override_sets_nested_values():
    cfg = load_config(DEMO, ["train.epochs=1", "search_strategy.generations=2", "train.optimizer.lr=0.5"])
    assert (cfg.train.epochs, cfg.search_strategy.generations, cfg.train.optimizer.lr) == (1, 2, 0.5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("search_strategy.populaton=3", "search_strategy.populaton: unknown key (did you mean population?)"),
        ("train.epocs=3", "train.epocs: unknown key (did you mean epochs?)"),
        ("train.optimizer.nmae=sgd", "train.optimizer.nmae: unknown key (did you mean name?)"),
        ("train.epochs=abc", "train.epochs: expected an integer, got str 'abc'"),
        ("train.lr_schedule=cosin", "train.lr_schedule: invalid value 'cosin' (did you mean cosine?)"),
        ("train.mini_batch=24", "train.mini_batch: 24 must divide train.batch_size (32)"),
        ("hardware.target_hc=-1", "hardware.target_hc: must be > 0"),
    ],
)
def test_bad_values_name_the_dotted_path(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_component_params_are_range_checked_on_load_and_when_built_in_code():
    with pytest.raises(ConfigError, match=r"^dataset.train_portion: must be in \(0, 1\), got 2.0$"):
        load_config(DEMO, ["dataset.train_portion=2"])
    ds = DATASETS.get("digits")
    with pytest.raises(ConfigError, match=r"^dataset.train_portion: must be in \(0, 1\), got 2.0$"):
        ds(ds.Params(train_portion=2.0))


def test_unknown_key_in_yaml(tmp_path):
    raw = load_yaml(DEMO)
    raw["search_strategy"]["populaton"] = 4
    with pytest.raises(ConfigError, match=r"^search_strategy.populaton: unknown key \(did you mean population\?\)$"):
        build_config(raw).validate()


def test_unknown_component_lists_valid_names():
    with pytest.raises(UnknownComponentError) as err:
        load_config(DEMO, ["agent.search_strategy_agent=evolutoin"])
    assert "did you mean evolution?" in str(err.value) and "random" in str(err.value)


def test_component_section_is_typed_by_the_chosen_component():
    # 'population' belongs to evolution, not to random search
    with pytest.raises(ConfigError, match="search_strategy.population: unknown key"):
        load_config(DEMO, ["agent.search_strategy_agent=random"])
    cfg = load_config(DEMO, ["agent.search_strategy_agent=random", "search_strategy={samples: 7}"])
    assert cfg.search_strategy.samples == 7


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yml"))
    bad = tmp_path / "bad.yml"
    bad.write_text("agent: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(bad))


def test_overrides_do_not_mutate_the_input():
    raw = {"train": {"epochs": 3}}
    out = apply_overrides(raw, ["train.epochs=5", "search.retrain=false"])
    assert raw == {"train": {"epochs": 3}} and out["train"]["epochs"] == 5 and out["search"]["retrain"] is False


def test_dump_round_trips(tmp_path):
    cfg = load_config(DEMO, ["train.epochs=2"])
    path = tmp_path / "config.yaml"
    dump_config(cfg, str(path))
    again = build_config(yaml.safe_load(path.read_text())).validate()
    assert again == cfg
