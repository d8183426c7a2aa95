"""focal criterion: exactly cross-entropy at gamma 0 (value and gradient), closed-form values at gamma 2 with and
without alpha, gradients against finite differences, stability at extreme logits, one-line errors for alpha."""

import math

import nnabla as nn
import numpy as np
import pytest
import yaml

import main
from core.config import build_config, load_yaml
from core.errors import ConfigError
from core.registries import CRITERIA
from criterion.base import CriterionSetup
from criterion.cross_entropy import CrossEntropy
from criterion.focal import Focal
from search_space.spec import DataInfo


def variables(logits, labels):
    x = nn.Variable.from_numpy_array(np.asarray(logits, np.float32), need_grad=True)
    return x, nn.Variable.from_numpy_array(np.asarray(labels).reshape(-1, 1))


def value_and_grad(criterion, logits, labels):
    x, t = variables(logits, labels)
    loss = criterion(x, t)
    loss.forward()
    x.grad.zero()
    loss.backward()
    return float(loss.d), x.g.copy()


def test_gamma_zero_is_cross_entropy_exactly():
    rng = np.random.default_rng(0)
    logits, labels = 3 * rng.standard_normal((16, 7)), rng.integers(0, 7, 16)
    ce_value, ce_grad = value_and_grad(CrossEntropy(CrossEntropy.Params()), logits, labels)
    fl_value, fl_grad = value_and_grad(Focal(Focal.Params(gamma=0.0)), logits, labels)
    assert fl_value == ce_value
    np.testing.assert_array_equal(fl_grad, ce_grad)


def test_gamma_two_by_hand():
    """p_t = 1/2, 3/4 and 1/4: FL = (1 - p_t)^2 * -log p_t = ln2 / 4, ln(4/3) / 16, 9 ln4 / 16."""
    logits = [[0.0, 0.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0]]
    labels = [0, 0, 1]
    per_sample = [math.log(2) / 4, math.log(4 / 3) / 16, 9 * math.log(4) / 16]
    value, _ = value_and_grad(Focal(Focal.Params(gamma=2.0)), logits, labels)
    assert value == pytest.approx(sum(per_sample) / 3, rel=1e-6)
    # alpha_t weights each sample by its class; the mean is over the batch
    value, _ = value_and_grad(Focal(Focal.Params(gamma=2.0, alpha=(0.25, 0.75))), logits, labels)
    assert value == pytest.approx((0.25 * per_sample[0] + 0.25 * per_sample[1] + 0.75 * per_sample[2]) / 3, rel=1e-6)
    # the easy sample (p_t = 3/4) keeps 1/16 of its cross-entropy, the hard one (p_t = 1/4) 9/16
    ce, _ = value_and_grad(CrossEntropy(CrossEntropy.Params()), logits[1:2], labels[1:2])
    assert ce == pytest.approx(math.log(4 / 3), rel=1e-6)


@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (0.5, (0.2, 1.0, 0.5, 2.0, 1.5)), (1.0, None)])
def test_gradient_matches_finite_differences(gamma, alpha):
    rng = np.random.default_rng(1)
    logits, labels = 2 * rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    criterion = Focal(Focal.Params(gamma=gamma, alpha=alpha))
    _, grad = value_and_grad(criterion, logits, labels)
    x, t = variables(logits, labels)
    loss = criterion(x, t)
    eps = 1e-2
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        for sign in (1, -1):
            shifted = logits.copy()
            shifted[idx] += sign * eps
            x.d = shifted
            loss.forward()
            numeric[idx] += sign * float(loss.d) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=2e-4, rtol=2e-3)


def test_extreme_logits_stay_finite():
    """p_t rounds to 1 in float32 (gap 200): the loss is 0 and, even for gamma < 1, no gradient is NaN."""
    logits = [[200.0, 0.0, 0.0], [0.0, 200.0, 0.0]]
    for gamma in (0.3, 2.0):
        value, grad = value_and_grad(Focal(Focal.Params(gamma=gamma)), logits, [0, 0])
        assert np.isfinite(grad).all()
        assert value == pytest.approx(200.0 / 2, rel=1e-5)  # the confidently wrong sample: (1 - 0)^gamma * 200
        assert grad[0] == pytest.approx(np.zeros(3), abs=1e-12)


def test_alpha_length_and_values_are_checked():
    setup = CriterionSetup(DataInfo(10, 1, 8), None, None, "digits", None, True, None)
    with pytest.raises(ConfigError, match=r"criterion.alpha: 3 weights for the 10 classes of dataset digits"):
        Focal(Focal.Params(alpha=(1.0, 1.0, 1.0))).setup(setup)
    Focal(Focal.Params(alpha=(1.0,) * 10)).setup(setup)
    x, t = variables(np.zeros((2, 4)), [0, 1])
    with pytest.raises(ConfigError, match="3 weights for the 4 classes of the logits"):
        Focal(Focal.Params(alpha=(1.0, 1.0, 1.0)))(x, t)
    with pytest.raises(ConfigError, match="at least one positive"):
        Focal(Focal.Params(alpha=(0.0, 0.0)))
    with pytest.raises(ConfigError, match=r"criterion.gamma: must be >= 0"):
        CRITERIA.get("focal")(Focal.Params(gamma=-1.0))


def test_config_alpha_of_another_length_is_refused_before_the_run_exists(tmp_path, capsys):
    raw = load_yaml("configs/demo.yml")
    raw["agent"]["criterion_agent"] = "focal"
    raw["criterion"] = {"gamma": 2.0, "alpha": [1.0, 2.0]}
    assert build_config(raw).criterion.alpha == (1.0, 2.0)
    path = tmp_path / "focal.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main.main(["-c", str(path), "--title", "f", "--output-dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: criterion.alpha: 2 weights for the 10 classes of dataset digits; give one per class"
    assert not (tmp_path / "runs").exists()
