"""train.workers: a step's accumulated passes on several threads give the step that running them one after another
gives (weights, BatchNorm running statistics, architecture parameters, losses), for every training strategy; graphs
that draw random numbers stay deterministic and resumable; a setting that cannot use its workers is refused."""

import dataclasses
import logging

import numpy as np
import pytest
from test_search_space import small_params

from core.config import OptimizerConfig, TrainConfig, build_config
from core.errors import ConfigError
from core.registries import AGENTS, CRITERIA, SEARCH_SPACES
from core.run_logging import Monitor, setup_logger
from core.seed import make_rng
from core.typed import to_plain
from dataset.base import ArrayDataset
from training_strategy.base import FixedNetwork
from training_strategy.data_parallel import DataParallel
from training_strategy.loop import RunIO, TrainLoop

IO = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)


def supernet_config(space, training, workers, mini_batch=4, batch=8):
    sp = SEARCH_SPACES.get(space)
    return build_config(
        {
            "agent": {
                "search_space_agent": space,
                "training_strategy_agent": training,
                "search_strategy_agent": "differentiable" if training in ("differentiable", "proxyless") else "random",
                "dataset_agent": "synthetic",
            },
            "dataset": {"num_classes": 4, "channels": 1, "input_size": 8, "samples": 128},
            "search_space": to_plain(small_params(sp)),
            "search_strategy": {} if training in ("differentiable", "proxyless") else {"samples": 2},
            "train": {
                "epochs": 2,
                "batch_size": batch,
                "mini_batch": mini_batch,
                "workers": workers,
                "max_steps_per_epoch": 3,
                "optimizer": {"name": "momentum", "lr": 0.1},
            },
            "search": {"retrain": False},
        }
    ).validate()


def trained_supernet(tmp_path, space, training, workers, **kw):
    setup_logger(verbose=False)
    agent = AGENTS.get("search")(supernet_config(space, training, workers, **kw), str(tmp_path), progress=False)
    tmp_path.mkdir(parents=True, exist_ok=True)
    agent.train_supernet()
    weights = {k: v.d.copy() for k, v in agent.supernet.get_parameters(grad_only=False).items()}
    alphas = {k: v.d.copy() for k, v in agent.supernet.arch_parameters().items()}
    return weights, alphas, agent.loop.history


def assert_same(a, b, rtol=2e-5, atol=2e-6):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize(
    "space, training",
    [
        ("ProxylessNAS", "uniform"),
        ("ProxylessNAS", "fair"),
        ("ProxylessNAS", "differentiable"),
        ("ProxylessNAS", "proxyless"),
        ("ENASMicro", "uniform"),
    ],
)
def test_workers_give_the_sequential_step(tmp_path, space, training):
    one = trained_supernet(tmp_path / "one", space, training, workers=1)
    two = trained_supernet(tmp_path / "two", space, training, workers=2)  # batch 8 = 2 passes of 4, one each
    assert_same(one[0], two[0])  # weights and BatchNorm running statistics
    assert_same(one[1], two[1])  # architecture parameters
    assert len(one[2]) == len(two[2]) == 2
    for h1, h2 in zip(one[2], two[2]):
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5)
        assert h1["accuracy"] == h2["accuracy"]


def test_uneven_blocks_of_passes_compose_the_running_statistics(tmp_path):
    """Four passes on three workers (blocks of 2, 1 and 1): the running statistics after the step are the
    sequential ones, which a single combined pass would not give."""
    one = trained_supernet(tmp_path / "one", "ProxylessNAS", "uniform", workers=1, mini_batch=2)
    three = trained_supernet(tmp_path / "three", "ProxylessNAS", "uniform", workers=3, mini_batch=2)
    assert_same(one[0], three[0])
    assert [h["loss"] for h in one[2]] == pytest.approx([h["loss"] for h in three[2]], rel=1e-5)


def test_random_functions_are_deterministic_and_resume_exactly(tmp_path):
    """A network with dropout: with two workers the run repeats exactly, and a run stopped after one epoch and
    resumed ends where an uninterrupted one does."""
    space = SEARCH_SPACES.get("SPOS")  # dropout 0.1 before the classifier
    params = small_params(space)
    assert params.dropout > 0
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    data = ArrayDataset(images, rng.integers(0, 4, 64))
    from search_space.spec import DataInfo

    info = DataInfo(4, 1, 8)
    arch = space.build_supernet(params, info).choices().sample(np.random.default_rng(1))
    crit = CRITERIA.get("cross_entropy")(None)
    cfg = TrainConfig(epochs=2, batch_size=16, mini_batch=8, workers=2, optimizer=OptimizerConfig(lr=0.05))

    initial = {k: v.d.copy() for k, v in space.build_model(params, info, arch).get_parameters(grad_only=False).items()}

    def fresh_model():
        model = space.build_model(params, info, arch)
        for k, v in model.get_parameters(grad_only=False).items():
            v.d = initial[k]
        return model

    def run(epochs_first=None, ckpt=None):
        io = RunIO(IO.logger, IO.monitor, ckpt)
        model = fresh_model()
        loop = TrainLoop(model, crit, data, cfg, FixedNetwork(), make_rng(0), io, "m")
        if epochs_first is not None:
            loop.cfg = dataclasses.replace(cfg, epochs=epochs_first)
            loop.run()
            model = fresh_model()
            loop = TrainLoop(model, crit, data, cfg, FixedNetwork(), make_rng(0), io, "m")
            loop.load_checkpoint(ckpt)
        loop.run()
        return {k: v.d.copy() for k, v in model.get_parameters(grad_only=False).items()}, loop.history

    first, second = run(), run()
    assert_same(first[0], second[0], rtol=0, atol=0)
    resumed = run(epochs_first=1, ckpt=str(tmp_path / "ckpt"))
    assert_same(first[0], resumed[0], rtol=0, atol=0)
    assert [h["loss"] for h in first[1]] == [h["loss"] for h in resumed[1]]


def test_a_step_with_fewer_passes_than_workers_is_refused():
    with pytest.raises(ConfigError, match=r"train\.workers: 3 workers share .* 2 passes; set train\.mini_batch"):
        supernet_config("ProxylessNAS", "uniform", workers=3)
    with pytest.raises(ConfigError, match=r"train\.workers: 2 .* 1 pass;"):
        supernet_config("ProxylessNAS", "uniform", workers=2, mini_batch=None)
    with pytest.raises(ValueError, match="at least 2 workers"):
        DataParallel(1)
