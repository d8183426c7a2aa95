"""The architecture generator (SGNAS): a small numpy MLP from a normalised budget to per-label distributions,
and its file (``generator.npz``) so a trained generator answers any budget without a new search (no nnabla)."""

import io
import json
import math
import zipfile
from typing import Any, Dict, List, Tuple

import numpy as np

from core.errors import CheckpointError, NASError
from search_space.choices import Arch, SearchSpaceChoices
from search_space.cost_model import CostModel, cost_model_from_dict
from search_strategy.base import Budget
from search_strategy.policy import ArchPolicy, most_probable_in_budget

FORMAT = 1
KIND = "architecture_generator"
_ARRAYS = ("w1", "b1", "w2", "b2")


class GeneratorNet:
    """``tau -> theta``: ``x = 2 tau - 1``, ``h = tanh(w1 x + b1)``, ``theta = w2 h + b2`` (own backprop).

    The output layer starts at zero, so the generator starts from the uniform distribution at every budget;
    the hidden units start as sigmoids with random slopes and centres spread over the budget range.
    """

    def __init__(self, arrays: Dict[str, np.ndarray]):
        self.arrays = {k: np.asarray(arrays[k], dtype=np.float64) for k in _ARRAYS}

    @classmethod
    def init(cls, n_out: int, hidden: int, rng: np.random.Generator) -> "GeneratorNet":
        """Fresh weights drawn from ``rng``."""
        slopes = rng.normal(0.0, 3.0, hidden)
        centres = rng.uniform(-1.0, 1.0, hidden)
        return cls({"w1": slopes, "b1": -slopes * centres, "w2": np.zeros((n_out, hidden)), "b2": np.zeros(n_out)})

    @property
    def hidden(self) -> int:
        """Number of hidden units."""
        return self.arrays["w1"].shape[0]

    @property
    def n_out(self) -> int:
        """Number of outputs (the policy's parameters)."""
        return self.arrays["b2"].shape[0]

    def flat(self) -> np.ndarray:
        """Every weight in one vector (the optimiser's view)."""
        return np.concatenate([self.arrays[k].ravel() for k in _ARRAYS])

    def set_flat(self, vector: np.ndarray) -> None:
        """Inverse of ``flat``."""
        start = 0
        for k in _ARRAYS:
            a = self.arrays[k]
            self.arrays[k] = vector[start : start + a.size].reshape(a.shape).copy()
            start += a.size

    def forward(self, tau: np.ndarray) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """``theta (m, n_out)`` for normalised budgets ``tau (m,)``, and what ``backward`` needs."""
        x = 2.0 * np.asarray(tau, dtype=np.float64) - 1.0
        h = np.tanh(np.outer(x, self.arrays["w1"]) + self.arrays["b1"])
        return h @ self.arrays["w2"].T + self.arrays["b2"], (x, h)

    def backward(self, cache: Tuple[np.ndarray, np.ndarray], g_theta: np.ndarray) -> np.ndarray:
        """Gradient of the loss w.r.t. ``flat()`` given its gradient w.r.t. ``theta``."""
        x, h = cache
        g_pre = (g_theta @ self.arrays["w2"]) * (1.0 - h * h)
        grads = {"w1": g_pre.T @ x, "b1": g_pre.sum(0), "w2": g_theta.T @ h, "b2": g_theta.sum(0)}
        return np.concatenate([grads[k].ravel() for k in _ARRAYS])


class TrainedGenerator:
    """A generator with what it was trained on: the space's choices, the cost metric and model, the budgets."""

    def __init__(
        self,
        choices: SearchSpaceChoices,
        metric: str | None,
        cost_model: CostModel,
        trained_range: Tuple[float, float],
        net: GeneratorNet,
        info: Dict[str, Any] | None = None,
    ):
        self.choices, self.metric, self.cost_model, self.net = choices, metric, cost_model, net
        self.policy = ArchPolicy(choices)
        self.low, self.high = float(cost_model.min_cost()), float(cost_model.max_cost())
        self.trained_range = (float(trained_range[0]), float(trained_range[1]))
        self.info = dict(info or {})
        if self.net.n_out != self.policy.size:
            raise CheckpointError(
                f"architecture generator: {self.net.n_out} outputs for a space of {self.policy.size} logits"
            )

    def tau(self, target: float) -> float:
        """The normalised budget of a target cost, clamped to the trained range."""
        lo, hi = self.trained_range
        return (min(max(float(target), lo), hi) - self.low) / (self.high - self.low)

    def probabilities(self, target: float) -> List[np.ndarray]:
        """Per label the generated value probabilities for a target cost."""
        theta, _ = self.net.forward(np.array([self.tau(target)]))
        return [p[0] for p in self.policy.probabilities(theta)]

    def hints(self, target: float) -> Dict[str, List[float]]:
        """``{label: probabilities}`` (per value, per input of a Subset) for a target cost."""
        return self.policy.hints(self.probabilities(target))

    def generate(self, budget: Budget, rng: np.random.Generator, repair_samples: int = 256) -> Arch:
        """The most probable architecture for ``budget.target`` (repaired into the budget if it is over)."""
        return most_probable_in_budget(self.choices, self.hints(budget.target), budget, rng, repair_samples)

    def meta(self) -> Dict[str, Any]:
        """The plain-data description stored beside the weights."""
        return {
            "format": FORMAT,
            "kind": KIND,
            "choices": self.choices.to_dict(),
            "metric": self.metric,
            "cost_model": self.cost_model.to_dict(),
            "trained_range": list(self.trained_range),
            "hidden": self.net.hidden,
            **self.info,
        }

    def to_bytes(self) -> bytes:
        """``generator.npz`` content: the weights and ``meta`` (JSON); byte-identical for equal generators."""
        arrays = {"meta": np.array(json.dumps(self.meta(), sort_keys=True)), **self.net.arrays}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, value in arrays.items():  # a fixed timestamp: np.savez stamps the current time
                with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                    np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def load(cls, path: str) -> "TrainedGenerator":
        """Read a ``generator.npz``; a missing, damaged or foreign file is a one-line CheckpointError."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"][()]))
                arrays = {k: np.array(data[k], dtype=np.float64) for k in _ARRAYS}
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such generator file") from None
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"{path}: not a readable generator file ({type(err).__name__})") from None
        if not isinstance(meta, dict) or meta.get("kind") != KIND or meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an architecture generator file (format {FORMAT})")
        try:
            choices = SearchSpaceChoices.from_dict(meta["choices"])
            model = cost_model_from_dict(meta["cost_model"])
            lo, hi = (float(v) for v in meta["trained_range"])
        except (KeyError, TypeError, ValueError, AttributeError, NASError) as err:
            raise CheckpointError(f"{path}: damaged generator description ({type(err).__name__}: {err})") from None
        hidden = int(meta.get("hidden", -1))
        shapes = {"w1": (hidden,), "b1": (hidden,), "w2": (ArchPolicy(choices).size, hidden)}
        shapes["b2"] = (shapes["w2"][0],)
        for k, shape in shapes.items():
            if arrays[k].shape != shape:
                raise CheckpointError(
                    f"{path}: damaged generator weights ({k} has shape {arrays[k].shape}, not {shape})"
                )
            if not np.isfinite(arrays[k]).all():
                raise CheckpointError(f"{path}: damaged generator weights ({k} holds non-finite values)")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise CheckpointError(f"{path}: damaged generator description (trained range {lo}..{hi})")
        info = {k: v for k, v in meta.items() if k not in ("format", "kind", "choices", "metric", "cost_model",
                                                           "trained_range", "hidden")}  # fmt: skip
        return cls(choices, meta.get("metric"), model, (lo, hi), GeneratorNet(arrays), info)
