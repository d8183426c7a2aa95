"""Retrain one architecture from scratch as a standalone Model, test it and export it."""

from typing import Any, Dict, Mapping

from agent.base import BaseAgent
from core.export import export_nnp
from core.visualize import plot_arch
from dataset.base import ArrayDataset
from hardware.counter import count_module
from training_strategy.base import FixedNetwork
from training_strategy.evaluation import evaluate_network
from training_strategy.loop import TrainLoop


def retrain_and_test(agent: BaseAgent, arch: Mapping[str, Any]) -> Dict[str, Any]:
    """Build the Model of ``arch``, train it on train+valid, report test accuracy, export model.nnp/arch.png."""
    cfg, data = agent.config, agent.data
    params = cfg.search_space
    arch = agent.space.choices(params, data.info).validate(arch)
    model = agent.space.build_model(params, data.info, arch)
    shape = data.train.images.shape[1:]
    cost = count_module(model, shape)
    agent.logger.info("retraining %s: %.0f FLOPs, %.0f params", dict(arch), cost["flops"], cost["params"])
    train = ArrayDataset.concat(data.train, data.valid)
    loop = agent.start(
        TrainLoop(
            model,
            agent.criterion,
            train,
            cfg.retrain,
            FixedNetwork(),
            agent.child_rng(),
            agent.io,
            tag="retrain",
            augment=agent.augment,
            eval_batch_size=cfg.search.eval_batch_size,
        )
    )
    history = loop.run()
    test = evaluate_network(model, data.test, cfg.search.eval_batch_size, criterion=agent.criterion)
    agent.monitor.scalars("retrain/test", test, cfg.retrain.epochs)
    agent.logger.info("test accuracy %.4f (loss %.4f)", test["accuracy"], test["loss"])
    plot_arch(arch, agent.path("arch.png"), title=f"{agent.space.name}: {cost['flops']:.0f} FLOPs")
    if cfg.evaluate.export_nnp:
        export_nnp(model, shape, agent.path("model.nnp"))
    return {
        "arch": dict(arch),
        "flops": cost["flops"],
        "params": cost["params"],
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "final_train": history[-1] if history else {},
    }
