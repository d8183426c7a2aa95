"""Knowledge distillation (Hinton et al., "Distilling the Knowledge in a Neural Network", arXiv:1503.02531):

    loss = (1 - w) * CE(logits, t) + w * T^2 * mean_batch KL(softmax(teacher / T) || softmax(logits / T))

The ``T^2`` factor keeps the soft term's gradient (``T * (softmax(logits/T) - softmax(teacher/T))``) of the
same size whatever the temperature. The teacher's graph is built under ``nn.no_grad()``: its parameters
enter it as gradient-free views, so the backward pass never reaches them, shared with the student or not.

Teachers (``teacher``):

- ``supernet_max``: in-place distillation (Yu & Huang, "Universally Slimmable Networks", ICCV 2019; BigNAS): the
  soft targets of a supernet training step are the supernet's *largest* path on the same (augmented) batch.
  "Largest" is the most expensive architecture under the run's budget metric (``hardware.info_metric``: FLOPs in
  the demos) by the lookup table's cost model in the criterion context: per label the dearest value (the first of
  equals, e.g. for decisions that cost nothing); for a cell space (``GatedCost``) an operation counts with its
  gated costs and an input choice with the dearest operations it can take. The teacher runs in the student's mode
  (training: batch statistics, as in BigNAS; the running statistics it updates are the largest path's own, and
  every candidate is BN-recalibrated before it is scored). The student's path is switched back before the
  student's graph is used, so the step trains exactly the sampled path. Only the soft-target part of BigNAS's
  sandwich rule is done here: the largest path is trained with the hard labels only when it is the sampled path
  (training it every step needs a training strategy that also updates its weight groups). Retraining a standalone
  network has no supernet: it trains with the hard-label loss (logged once), and an evaluate run, which trains no
  supernet at all, is refused.
- ``checkpoint``: a fixed, fully trained teacher (as OFA distils from its trained full network): the retrained
  network of a finished run (``teacher_run``, see ``criterion.teacher``), in inference mode, in supernet
  training and in retraining alike.

The criterion needs the input batch, ``x`` in its context (``StrategyContext.criterion_context``). Called
without it (validation and test loss, auxiliary heads) it is the plain cross-entropy, so reported
losses stay comparable with the other criteria.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Mapping

import nnabla as nn
import nnabla.functions as F

from core.errors import ConfigError
from core.registries import CRITERIA
from core.run_logging import get_logger
from core.typed import PositiveFloat, Probability
from criterion.base import BaseCriterion, CriterionSetup
from criterion.teacher import load_teacher
from search_space.choices import Arch, SearchSpaceChoices
from search_space.cost_model import CostModel, GatedCost

NAME = "knowledge_distillation"


def distillation_loss(
    logits: nn.Variable, target: nn.Variable, teacher_logits: nn.Variable, weight: float, temperature: float
) -> nn.Variable:
    """``(1 - w) * CE(logits, target) + w * T^2 * mean KL(softmax(teacher/T) || softmax(logits/T))``."""
    if teacher_logits.shape != logits.shape:
        raise ConfigError(
            f"criterion {NAME}: the teacher gives logits of shape {teacher_logits.shape}, the student {logits.shape}"
        )
    scale = 1.0 / temperature
    log_q = F.log_softmax(logits if temperature == 1.0 else logits * scale, axis=1)
    log_p = F.log_softmax(teacher_logits if temperature == 1.0 else teacher_logits * scale, axis=1)
    soft = F.mean(F.sum(F.exp(log_p) * (log_p - log_q), axis=1)) * (temperature * temperature)
    if weight >= 1.0:
        return soft
    return (1.0 - weight) * F.mean(F.softmax_cross_entropy(logits, target)) + weight * soft


def largest_arch(choices: SearchSpaceChoices, cost_model: CostModel) -> Arch:
    """The most expensive architecture of ``choices`` under ``cost_model`` (per label its dearest value)."""
    if isinstance(cost_model, GatedCost):
        rows = {label: dict(row) for label, row in cost_model.bounds()[1].table.items()}  # inputs: dearest ops
        for term in cost_model.terms:  # an operation that runs while its input is taken: its gated cost counts
            row = rows.setdefault(term.label, {})
            for value, cost in term.costs.items():
                row[value] = row.get(value, 0.0) + cost
    else:
        rows = {label: dict(row) for label, row in cost_model.table.items()}
    arch: Arch = {}
    for label, choice in choices.items():
        row = rows.get(label, {})
        arch[label] = max(choice.values, key=lambda v: row.get(v, 0.0))  # max keeps the first of equals
    return arch


@contextmanager
def switched_to(supernet: Any, arch: Mapping[str, Any]) -> Iterator[None]:
    """Inside: ``supernet`` computes ``arch`` alone (sample mode); after: every decision is as it was."""
    saved = [(d, d.index, d.mode, d.gate_hook) for d in supernet.decisions().values()]
    try:
        supernet.set_mode("sample")
        supernet.set_active(arch)
        yield
    finally:
        for d, index, mode, hook in saved:
            d.index, d.mode, d.gate_hook = index, mode, hook


@dataclass(frozen=True)
class KnowledgeDistillationParams:
    """Teacher source, soft-target weight ``w`` and temperature ``T``."""

    teacher: Literal["supernet_max", "checkpoint"] = "supernet_max"
    #: teacher checkpoint: a finished run directory (its config.yaml and checkpoints/retrain_*)
    teacher_run: str | None = None
    #: weight of the soft-target term (0 = cross-entropy only, 1 = soft targets only)
    weight: Probability = 0.5
    temperature: PositiveFloat = 4.0


@CRITERIA.register(NAME)
class KnowledgeDistillation(BaseCriterion):
    """Hard-label cross-entropy plus the temperature-scaled KL divergence to a teacher's soft targets."""

    Params = KnowledgeDistillationParams

    def __init__(self, params: KnowledgeDistillationParams):
        super().__init__(params)
        if params.teacher == "checkpoint" and not params.teacher_run:
            raise ConfigError("criterion.teacher_run: required with teacher: checkpoint (a finished run directory)")
        if params.teacher == "supernet_max" and params.teacher_run:
            raise ConfigError("criterion.teacher_run: only read with teacher: checkpoint (teacher is supernet_max)")
        self.teacher_model: Any = None
        self.logger = get_logger()
        self._logged: set = set()

    def setup(self, run: CriterionSetup) -> None:
        """Load and check the checkpoint teacher; refuse an in-place teacher in a run that trains no supernet."""
        self.logger = run.logger
        if self.params.teacher == "checkpoint":
            self.teacher_model, description = load_teacher(self.params.teacher_run, run)
            self.logger.info("%s: teacher %s", NAME, description)
        elif not run.trains_supernet:
            raise ConfigError(
                "criterion.teacher: supernet_max distils from the supernet's largest path, and this run trains no "
                "supernet; use teacher: checkpoint with teacher_run, or criterion_agent: cross_entropy"
            )

    def _once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            self.logger.info(message, *args)

    def teacher_logits(
        self, x: nn.Variable, supernet: Any = None, cost_model: CostModel | None = None
    ) -> nn.Variable | None:
        """The teacher's (gradient-free) logits of batch ``x``; None when there is no teacher (no supernet)."""
        if self.params.teacher == "checkpoint":
            if self.teacher_model is None:
                raise ConfigError(f"criterion {NAME}: the checkpoint teacher is loaded by setup(), which was not run")
            with nn.no_grad():
                out = self.teacher_model(x)
        elif supernet is None:
            self._once(
                "retrain",
                "%s: no supernet to distil from (a standalone network): training with the hard-label cross-entropy",
                NAME,
            )
            return None
        else:
            if cost_model is None:
                raise ConfigError(
                    f"criterion {NAME}: teacher supernet_max needs the lookup table's cost model in its context"
                )
            arch = largest_arch(supernet.choices(), cost_model)
            self._once("largest", "%s: in-place teacher = the largest path %s", NAME, arch)
            with switched_to(supernet, arch), nn.no_grad():
                out = supernet(x)
        out.need_grad = False
        return out

    def __call__(
        self,
        logits: nn.Variable,
        target: nn.Variable,
        x: nn.Variable | None = None,
        supernet: Any = None,
        cost_model: CostModel | None = None,
        **context: Any,
    ) -> nn.Variable:
        p = self.params
        teacher = None if x is None or p.weight == 0 else self.teacher_logits(x, supernet, cost_model)
        if teacher is None:
            return F.mean(F.softmax_cross_entropy(logits, target))
        return distillation_loss(logits, target, teacher, p.weight, p.temperature)
