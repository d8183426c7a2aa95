"""Typed, frozen run configuration: YAML (safe_load) + `key.sub=value` overrides -> dataclasses."""

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Sequence

import yaml

from core.errors import ConfigError
from core.registries import AGENTS, COMPONENT_SECTIONS
from core.typed import from_dict, to_plain


@dataclass(frozen=True)
class AgentConfig:
    """Which registered component plays each part of the run."""

    main_agent: str = "search"
    search_space_agent: str = "ProxylessNAS"
    training_strategy_agent: str = "uniform"
    search_strategy_agent: str = "evolution"
    criterion_agent: str = "cross_entropy"
    dataset_agent: str = "digits"


@dataclass(frozen=True)
class OptimizerConfig:
    """Weight optimizer (an nnabla.solvers solver) and its hyper-parameters."""

    name: Literal["sgd", "momentum", "nesterov", "adam", "adamw"] = "momentum"
    lr: float = 0.05
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 4e-5


@dataclass(frozen=True)
class TrainConfig:
    """One training loop: supernet training (`train`) or from-scratch retraining (`retrain`)."""

    epochs: int = 10
    batch_size: int = 64
    mini_batch: int | None = None
    warmup_epochs: int = 0
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_epochs: int = 30
    step_gamma: float = 0.1
    grad_clip: float | None = 5.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    max_steps_per_epoch: int | None = None
    log_every: int = 10
    checkpoint_every: int = 1


@dataclass(frozen=True)
class HardwareConfig:
    """The hardware budget: which lookup-table metric constrains the search, and its target."""

    info_metric: Literal["flops", "params"] = "flops"
    target_hc: float | None = None


@dataclass(frozen=True)
class SearchConfig:
    """How the search stage scores architectures on the trained supernet."""

    valid_batches: int | None = None
    eval_batch_size: int = 256
    bn_recalibration_batches: int = 0
    retrain: bool = True


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate stage: which architecture to retrain from scratch and what to export."""

    arch_path: str | None = None
    export_nnp: bool = True


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one run; only main.py sees it entire."""

    agent: AgentConfig
    search_space: Any
    training_strategy: Any
    search_strategy: Any
    criterion: Any
    dataset: Any
    seed: int = 0
    context: Literal["cpu", "cudnn"] = "cpu"
    device_id: str = "0"
    output_dir: str = "runs"
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def validate(self) -> "Config":
        """Cross-field checks that no single field can make; returns self."""
        for name in ("train", "retrain"):
            tc: TrainConfig = getattr(self, name)
            _positive(f"{name}.epochs", tc.epochs, allow_zero=True)
            _positive(f"{name}.batch_size", tc.batch_size)
            _positive(f"{name}.log_every", tc.log_every)
            _positive(f"{name}.optimizer.lr", tc.optimizer.lr)
            if tc.mini_batch is not None:
                _positive(f"{name}.mini_batch", tc.mini_batch)
                if tc.batch_size % tc.mini_batch:
                    raise ConfigError(
                        f"{name}.mini_batch: {tc.mini_batch} must divide {name}.batch_size ({tc.batch_size})"
                    )
            if tc.warmup_epochs < 0 or tc.warmup_epochs > max(tc.epochs, 0):
                raise ConfigError(f"{name}.warmup_epochs: {tc.warmup_epochs} must be between 0 and {name}.epochs")
            if tc.max_steps_per_epoch is not None:
                _positive(f"{name}.max_steps_per_epoch", tc.max_steps_per_epoch)
            if tc.grad_clip is not None:
                _positive(f"{name}.grad_clip", tc.grad_clip)
        if self.hardware.target_hc is not None:
            _positive("hardware.target_hc", self.hardware.target_hc)
        if self.search.valid_batches is not None:
            _positive("search.valid_batches", self.search.valid_batches)
        _positive("search.eval_batch_size", self.search.eval_batch_size)
        if self.search.bn_recalibration_batches < 0:
            raise ConfigError("search.bn_recalibration_batches: must be >= 0")
        if self.agent.main_agent == "evaluate" and not self.evaluate.arch_path:
            raise ConfigError("evaluate.arch_path: required when agent.main_agent is evaluate")
        return self

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict of every resolved value (what config.yaml in the run directory holds)."""
        return to_plain(self)


def _positive(path: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def parse_override(text: str) -> "tuple[List[str], Any]":
    """Split a CLI override ``a.b.c=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err.problem})") from None
    return parts, value


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.sub=value`` override set (unknown keys fail later)."""
    out = _deep_copy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {'.'.join(parts)}")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML mapping with safe_load, with one-line errors for a missing or malformed file."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def build_config(raw: Dict[str, Any]) -> Config:
    """Type a raw config dict: fixed sections first, then each component's own params dataclass."""
    raw = dict(raw)
    agent = from_dict(AgentConfig, raw.pop("agent", None), "agent")
    AGENTS.get(agent.main_agent)  # unknown main agent -> error listing valid names
    sections: Dict[str, Any] = {}
    for section, (agent_key, registry) in COMPONENT_SECTIONS.items():
        component = registry.get(getattr(agent, agent_key))
        sections[section] = from_dict(component.Params, raw.pop(section, None), section)
    fixed = from_dict(_FixedPart, raw, "")
    return Config(agent=agent, **sections, **{f.name: getattr(fixed, f.name) for f in dataclasses.fields(fixed)})


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Load, override, type and validate a config file."""
    return build_config(apply_overrides(load_yaml(path), overrides)).validate()


def dump_config(config: Config, path: str) -> None:
    """Write the resolved config as YAML."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)


def _fixed_part_type() -> type:
    names = {"agent"} | set(COMPONENT_SECTIONS)
    fields = [
        (
            f.name,
            f.type,
            field(default=f.default)
            if f.default is not dataclasses.MISSING
            else field(default_factory=f.default_factory),
        )
        for f in dataclasses.fields(Config)
        if f.name not in names
    ]
    return dataclasses.make_dataclass("_FixedPart", fields, frozen=True)


_FixedPart = _fixed_part_type()
