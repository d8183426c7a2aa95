"""Numpy optimisers and the moving-average reward baseline of the policy-gradient strategies (no nnabla)."""

import math
from typing import Any, Dict, Literal

import numpy as np


class Optimizer:
    """Adam or SGD (with momentum) minimising over one flat parameter vector; all state in ``state_dict``."""

    def __init__(
        self,
        name: Literal["adam", "sgd"],
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        momentum: float = 0.0,
        eps: float = 1e-8,
    ):
        self.name, self.lr, self.beta1, self.beta2, self.momentum, self.eps = name, lr, beta1, beta2, momentum, eps
        self.t = 0
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def step(self, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """The parameters after one descent step on ``grad`` (a new array)."""
        if self.m is None:
            self.m, self.v = np.zeros_like(params), np.zeros_like(params)
        self.t += 1
        if self.name == "sgd":
            self.m = self.momentum * self.m + grad
            return params - self.lr * self.m
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * grad * grad
        m_hat = self.m / (1.0 - self.beta1**self.t)
        v_hat = self.v / (1.0 - self.beta2**self.t)
        return params - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state_dict(self) -> Dict[str, Any]:
        """Step count and moment arrays."""
        return {
            "t": self.t,
            "m": None if self.m is None else self.m.copy(),
            "v": None if self.v is None else self.v.copy(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        self.t = int(state["t"])
        self.m = None if state["m"] is None else np.array(state["m"], dtype=np.float64)
        self.v = None if state["v"] is None else np.array(state["v"], dtype=np.float64)


class RewardBaseline:
    """Exponential moving average of the rewards (mean and spread), ``b <- decay * b + (1 - decay) * mean(batch)``.

    The first batch sets it. ``advantages`` uses the baseline *before* the batch updates it, and with
    ``normalize`` divides by the moving standard deviation of the rewards around it (a positive, slowly varying
    step size: the estimator keeps its direction, its scale stops depending on the reward's units).
    """

    def __init__(self, decay: float, normalize: bool = True):
        self.decay, self.normalize = decay, normalize
        self.value: float | None = None
        self.var = 0.0

    def advantages(self, rewards: np.ndarray) -> np.ndarray:
        """``(r - b) / std`` for a batch of rewards, then the baseline moves towards the batch."""
        r = np.asarray(rewards, dtype=np.float64)
        if self.value is None:
            self.value, self.var = float(r.mean()), float(r.var())
        adv = r - self.value
        if self.normalize:
            adv = adv / max(math.sqrt(self.var), 1e-8 + 1e-6 * abs(self.value))
        d = self.decay
        self.var = d * self.var + (1.0 - d) * float(np.mean((r - self.value) ** 2))
        self.value = d * self.value + (1.0 - d) * float(r.mean())
        return adv

    def state_dict(self) -> Dict[str, Any]:
        """The moving mean and variance."""
        return {"value": self.value, "var": self.var}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Inverse of ``state_dict``."""
        self.value = None if state["value"] is None else float(state["value"])
        self.var = float(state["var"])


class RunningScale:
    """Divides advantages by their moving root mean square (set by the first batch), so step sizes do not
    depend on the reward's units; a positive, slowly varying factor leaves the estimator's direction alone."""

    def __init__(self, decay: float):
        self.decay = decay
        self.mean_square: float | None = None

    def __call__(self, advantages: np.ndarray) -> np.ndarray:
        """The scaled advantages; then the moving mean square moves towards the batch's."""
        a = np.asarray(advantages, dtype=np.float64)
        batch = float(np.mean(a * a))
        if self.mean_square is None:
            self.mean_square = batch
        out = a / max(math.sqrt(self.mean_square), 1e-8)
        self.mean_square = self.decay * self.mean_square + (1.0 - self.decay) * batch
        return out
