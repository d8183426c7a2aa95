"""Typed, frozen run configuration: YAML (safe_load) + `key.sub=value` overrides -> dataclasses."""

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Literal, Mapping, Sequence

import yaml

from core.checkpoint import atomic_path
from core.errors import ConfigError, UnknownComponentError
from core.registries import AGENTS, COMPONENT_SECTIONS
from core.typed import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    from_dict,
    to_plain,
)


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
    lr: PositiveFloat = 0.05
    momentum: Probability = 0.9
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    weight_decay: NonNegativeFloat = 4e-5


@dataclass(frozen=True)
class TrainConfig:
    """One training loop: supernet training (`train`) or from-scratch retraining (`retrain`)."""

    epochs: NonNegativeInt = 10
    batch_size: PositiveInt = 64
    #: gradient accumulation: ``batch_size / mini_batch`` forward/backward passes per step (null = one pass)
    mini_batch: PositiveInt | None = None
    #: threads that run a step's ``batch_size / mini_batch`` passes side by side (data parallel; nnabla's CPU
    #: functions use one core each): the same step as running them one after another, faster (two workers on the
    #: demo: 1.3-1.8x); random functions (dropout) draw other numbers
    workers: PositiveInt = 1
    warmup_epochs: NonNegativeInt = 0
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_epochs: PositiveInt = 30
    step_gamma: PositiveFloat = 0.1
    grad_clip: PositiveFloat | None = 5.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    max_steps_per_epoch: PositiveInt | None = None
    log_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 1
    #: a non-finite loss or gradient norm: ``stop`` the run (the last checkpoint stays resumable) or ``skip`` the step
    on_nan: Literal["stop", "skip"] = "stop"


@dataclass(frozen=True)
class HardwareConfig:
    """The hardware budget (which lookup-table metric constrains the search, and its target) and the table.

    ``flops`` (multiply-accumulates) and ``params`` are counted from the graph; ``latency`` (ms: ``runs`` timed
    forward passes after ``warmup`` in ``rounds`` interleaved rounds, the smallest round median, at ``batch_size``,
    on the run's context) and ``memory``
    (bytes: parameters + peak activations of a forward pass at ``batch_size``) are measured on this machine.
    """

    info_metric: Literal["flops", "params", "latency", "memory"] = "flops"
    target_hc: PositiveFloat | None = None
    #: a saved lookup table to reuse (JSON); built and saved there when missing or measured elsewhere
    lookup_table: str | None = None
    #: a saved table whose fingerprint (space, input, measurement settings, machine) differs: rebuild or refuse
    on_mismatch: Literal["rebuild", "refuse"] = "rebuild"
    #: measured metrics: batch size, warm-up passes, timed passes in all, spread over interleaved rounds (a graph's
    #: latency is its smallest round median: robust to the slow phases of a machine shared with other work)
    batch_size: PositiveInt = 1
    warmup: NonNegativeInt = 3
    runs: PositiveInt = 15
    rounds: PositiveInt = 3
    #: measured metrics: random whole networks measured to calibrate the table's sums (0: raw sums)
    calibration_samples: NonNegativeInt = 8


@dataclass(frozen=True)
class SearchConfig:
    """How the search stage scores architectures on the trained supernet."""

    valid_batches: PositiveInt | None = None
    eval_batch_size: PositiveInt = 256
    #: training batches re-estimating BatchNorm statistics of each evaluated path (the same batches for all)
    bn_recalibration_batches: NonNegativeInt = 0
    retrain: bool = True
    #: after the found architecture's retrain: this many random in-budget architectures (drawn as the ``random``
    #: strategy draws) retrained and tested the same way, for a search-vs-random comparison; 0 = off
    random_baseline: NonNegativeInt = 0


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate stage: which architecture to retrain from scratch and what to export."""

    arch_path: str | None = None
    export_nnp: bool = True


@dataclass(frozen=True)
class GenerateConfig:
    """The generate stage: a trained architecture generator answers ``hardware.target_hc`` without a new search."""

    #: generator.npz written by a search with ``search_strategy_agent: architecture_generator``
    generator_path: str | None = None
    #: retrain, test and export the generated architecture (as the evaluate agent does)
    retrain: bool = False


@dataclass(frozen=True)
class RankQualityConfig:
    """The rank_quality stage: how well the trained supernet ranks architectures against training them alone."""

    #: architectures spread over the budget metric's cost range (within ``hardware.target_hc``), each scored in the
    #: supernet and retrained from scratch with the ``retrain:`` settings
    archs: Annotated[int, Range(ge=2)] = 12
    #: the top-k overlap's k: the share of the k best by supernet score that are among the k best retrained
    top_k: PositiveInt = 3


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of one run; only main.py sees it entire."""

    agent: AgentConfig
    search_space: Any
    training_strategy: Any
    search_strategy: Any
    criterion: Any
    dataset: Any
    seed: NonNegativeInt = 0
    context: Literal["cpu", "cudnn"] = "cpu"
    device_id: str = "0"
    output_dir: str = "runs"
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    rank_quality: RankQualityConfig = field(default_factory=RankQualityConfig)

    def validate(self) -> "Config":
        """Cross-field checks that no single field can make; returns self."""
        for name in ("train", "retrain"):
            tc: TrainConfig = getattr(self, name)
            if tc.mini_batch is not None and tc.batch_size % tc.mini_batch:
                raise ConfigError(f"{name}.mini_batch: {tc.mini_batch} must divide {name}.batch_size ({tc.batch_size})")
            passes = tc.batch_size // (tc.mini_batch or tc.batch_size)
            if tc.workers > passes:
                raise ConfigError(
                    f"{name}.workers: {tc.workers} workers share a step's batch_size / mini_batch = {passes} "
                    f"pass{'es' if passes > 1 else ''}; set {name}.mini_batch to {name}.batch_size / workers "
                    f"({tc.batch_size / tc.workers:g}) or less, or workers to {passes}"
                )
            if tc.warmup_epochs > tc.epochs:
                raise ConfigError(f"{name}.warmup_epochs: {tc.warmup_epochs} must be between 0 and {name}.epochs")
            if tc.optimizer.name in ("momentum", "nesterov") and tc.optimizer.momentum >= 1.0:
                raise ConfigError(f"{name}.optimizer.momentum: must be < 1, got {tc.optimizer.momentum}")
        if self.agent.main_agent == "evaluate" and not self.evaluate.arch_path:
            raise ConfigError("evaluate.arch_path: required when agent.main_agent is evaluate")
        if self.agent.main_agent == "generate":
            if not self.generate.generator_path:
                raise ConfigError("generate.generator_path: required when agent.main_agent is generate")
            if self.hardware.target_hc is None:
                raise ConfigError("hardware.target_hc: required when agent.main_agent is generate (the budget)")
        if self.search.random_baseline == 1:
            raise ConfigError("search.random_baseline: 1 architecture has no spread; use 0 (off) or at least 2")
        if self.search.random_baseline and not self.search.retrain:
            raise ConfigError(
                "search.random_baseline: needs search.retrain: true (the baseline is compared with the found "
                "architecture's test accuracy)"
            )
        rq = self.rank_quality
        if rq.top_k > rq.archs:
            raise ConfigError(f"rank_quality.top_k: must be at most rank_quality.archs ({rq.archs}), got {rq.top_k}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict of every resolved value (what config.yaml in the run directory holds)."""
        return to_plain(self)


class _Loader(yaml.SafeLoader):
    """safe_load that reads ``1e-3`` as a float (YAML 1.1 needs a dot: ``1.0e-3``), as YAML 1.2 does."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(stream: Any) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-3``)."""
    return yaml.load(stream, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def parse_override(text: str) -> "tuple[List[str], Any]":
    """Split a CLI override ``a.b.c=value`` into its key path and YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part")
    try:
        value = yaml_load(raw) if raw.strip() else None
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
            data = yaml_load(f)
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
    _component(agent, "main_agent", AGENTS)  # unknown main agent -> error listing valid names
    sections: Dict[str, Any] = {}
    for section, (agent_key, registry) in COMPONENT_SECTIONS.items():
        component = _component(agent, agent_key, registry)
        sections[section] = from_dict(component.Params, raw.pop(section, None), section)
    fixed = from_dict(_FixedPart, raw, "")
    return Config(agent=agent, **sections, **{f.name: getattr(fixed, f.name) for f in dataclasses.fields(fixed)})


def _component(agent: AgentConfig, key: str, registry: Any) -> Any:
    """The component ``agent.<key>`` names; an unknown name is an error naming that key."""
    try:
        return registry.get(getattr(agent, key))
    except UnknownComponentError as err:
        raise UnknownComponentError(f"agent.{key}: {err}") from None


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Load, override, type and validate a config file."""
    return build_config(apply_overrides(load_yaml(path), overrides)).validate()


def dump_config(config: Config, path: str) -> None:
    """Write the resolved config as YAML (atomically)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            yaml.safe_dump(config.to_dict(), f, sort_keys=False)


#: the keys a resumed run may change; every other value is fixed by the checkpoints it continues from
RESUMABLE_KEYS = (
    "train.epochs",
    "retrain.epochs",
    "train.log_every",
    "retrain.log_every",
    "train.checkpoint_every",
    "retrain.checkpoint_every",
    "train.workers",
    "retrain.workers",
    "search.retrain",
    "evaluate.export_nnp",
    "context",
    "device_id",
    "output_dir",
)


def check_resume_changes(saved: Config, resumed: Config) -> None:
    """ConfigError naming the first value a resume changes that its checkpoints depend on."""
    old, new = flatten(saved.to_dict()), flatten(resumed.to_dict())
    for key in list(old) + [k for k in new if k not in old]:
        if old.get(key) != new.get(key) and key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"{key}: cannot change when resuming (the run was made with {old.get(key)!r}, not {new.get(key)!r}); "
                f"a resume may change only {', '.join(RESUMABLE_KEYS)} — start a new run instead"
            )


def flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a.b": value}`` of a nested mapping (leaves are non-mappings)."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


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
