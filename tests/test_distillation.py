"""knowledge_distillation criterion: the loss by hand, the T^2 scaling, the in-place teacher (largest path, the
student's path untouched, no gradient through the teacher), the checkpoint teacher of a real tiny run (its
logits, the student's weights untouched, no gradient to it), one-line refusals, runs and resume."""

import itertools
import json
import logging
import math
import shutil

import nnabla as nn
import numpy as np
import pytest
import yaml

import main
from core.config import OptimizerConfig, TrainConfig, build_config, load_config, load_yaml
from core.errors import ConfigError
from core.registries import CRITERIA, DATASETS, SEARCH_SPACES, TRAINING_STRATEGIES
from core.run_logging import Monitor
from core.run_state import load_parameters, read_checkpoint
from core.seed import make_rng, seed_nnabla
from criterion.base import CriterionSetup
from criterion.distillation import KnowledgeDistillation, distillation_loss, largest_arch
from search_space.choices import Categorical, SearchSpaceChoices, Subset
from search_space.cost_model import AdditiveCost, GatedCost, GatedTerm
from search_space.spec import DataInfo
from training_strategy.base import StrategyContext
from training_strategy.loop import RunIO, TrainLoop

KD = KnowledgeDistillation
TINY_SPACE = {"first_channels": 8, "first_mb_channels": 8, "stages": [[8, 2, 1], [16, 2, 2], [16, 2, 1]],
              "last_channels": 32}  # fmt: skip
FAST = {
    "train": {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 3, "optimizer": {"name": "momentum", "lr": 0.05}},
    "retrain": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2, "optimizer": {"name": "momentum", "lr": 0.1}},
    "search": {"valid_batches": 1, "bn_recalibration_batches": 1, "retrain": True},
    "search_strategy": {"population": 2, "generations": 1, "parents": 1},
    "evaluate": {"export_nnp": False},
    "hardware": {"info_metric": "flops", "target_hc": None},
}


def raw_config(criterion=None, **sections):
    """configs/demo.yml on the tiny space with short stages; ``criterion`` params for knowledge_distillation."""
    raw = load_yaml("configs/demo.yml")
    raw["search_space"] = dict(TINY_SPACE)
    raw.update({k: dict(v) for k, v in FAST.items()})
    if criterion is not None:
        raw["agent"]["criterion_agent"] = "knowledge_distillation"
        raw["criterion"] = criterion
    for key, value in sections.items():
        if key in ("main_agent",):
            raw["agent"][key] = value
        else:
            raw[key] = {**raw.get(key, {}), **value}
    return raw


def run(tmp_path, title, raw, capsys=None):
    """main.main on ``raw`` (written to a file); returns the exit code and stderr."""
    path = tmp_path / f"{title}.yml"
    path.write_text(yaml.safe_dump(raw))
    code = main.main(["-c", str(path), "--title", title, "--output-dir", str(tmp_path / "runs"), "--quiet"])
    return code, capsys.readouterr().err.strip() if capsys is not None else ""


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A finished tiny evaluate run (retrained network of a fixed arch) to distil from."""
    tmp = tmp_path_factory.mktemp("teacher")
    space = SEARCH_SPACES.get("ProxylessNAS")
    cfg = build_config(raw_config())
    arch = {label: choice.values[3] for label, choice in space.choices(cfg.search_space, DataInfo(10, 1, 8)).items()}
    (tmp / "arch.json").write_text(json.dumps({"arch": arch}))
    raw = raw_config(main_agent="evaluate", evaluate={"arch_path": str(tmp / "arch.json"), "export_nnp": False})
    assert run(tmp, "t", raw)[0] == 0
    return tmp / "runs" / "t"


def setup_for(raw, trains_supernet=True):
    """The CriterionSetup a run of ``raw`` gives its criterion."""
    cfg = build_config(raw)
    data = DATASETS.get(cfg.agent.dataset_agent)(cfg.dataset).load()
    space = SEARCH_SPACES.get(cfg.agent.search_space_agent)
    return CriterionSetup(
        data.info, space, cfg.search_space, cfg.agent.dataset_agent, cfg.dataset, trains_supernet, logging.getLogger()
    ), data


def const(a):
    return nn.Variable.from_numpy_array(np.asarray(a, np.float32))


def grads_of(loss, params):
    for v in params.values():
        v.grad.zero()
    loss.forward(clear_no_need_grad=True)
    loss.backward(clear_buffer=True)
    return {k: v.g.copy() for k, v in params.items()}


# ---- the loss ------------------------------------------------------------------------------------------


def log_softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_value_by_hand():
    rng = np.random.default_rng(0)
    z, v, labels = 2 * rng.standard_normal((6, 5)), 2 * rng.standard_normal((6, 5)), rng.integers(0, 5, (6, 1))
    w, temp = 0.3, 3.0
    ce = -log_softmax64(z)[np.arange(6), labels[:, 0]].mean()
    log_p, log_q = log_softmax64(v / temp), log_softmax64(z / temp)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean()
    loss = distillation_loss(const(z), const(labels), const(v), w, temp)
    loss.forward()
    assert float(loss.d) == pytest.approx((1 - w) * ce + w * temp**2 * kl, rel=1e-5)
    # a teacher that agrees with the student adds nothing: (1 - w) * CE
    same = distillation_loss(const(z), const(labels), const(z), w, temp)
    same.forward()
    assert float(same.d) == pytest.approx((1 - w) * ce, rel=1e-5)
    # two classes, w = 1, T = 1: KL(Bernoulli(1/2) || Bernoulli(1/4)) = ln(2/sqrt(3)) per sample
    two = distillation_loss(const([[math.log(3.0), 0.0]]), const([[0]]), const([[0.0, 0.0]]), 1.0, 1.0)
    two.forward()
    assert float(two.d) == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25), rel=1e-5)


def test_t_squared_keeps_the_soft_gradient_scale():
    """At high T, T^2 KL -> sum((z - v)^2) / 2K and its gradient -> (z - v) / K per sample (zero-mean logits),
    whatever T: without the T^2 factor both would shrink like 1/T^2 and 1/T."""
    rng = np.random.default_rng(2)
    z, v = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    z, v = z - z.mean(axis=1, keepdims=True), v - v.mean(axis=1, keepdims=True)
    k, b = z.shape[1], z.shape[0]
    limit_value = ((z - v) ** 2).sum(axis=1).mean() / (2 * k)
    limit_grad = (z - v) / (k * b)
    errors = []
    for temp in (10.0, 40.0):
        x = nn.Variable.from_numpy_array(z.astype(np.float32), need_grad=True)
        loss = distillation_loss(x, const(np.zeros((4, 1))), const(v), 1.0, temp)
        loss.forward()
        x.grad.zero()
        loss.backward()
        errors.append(np.abs(x.g - limit_grad).max() / np.abs(limit_grad).max())
        assert float(loss.d) == pytest.approx(limit_value, rel=0.1)
    assert errors[1] < 0.05 and errors[1] < errors[0]


def test_without_the_input_batch_it_is_cross_entropy():
    """Evaluation and auxiliary heads call the criterion without ``x``: the plain cross-entropy."""
    rng = np.random.default_rng(3)
    z, labels = const(rng.standard_normal((5, 4))), const(rng.integers(0, 4, (5, 1)))
    kd, ce = KD(KD.Params())(z, labels), CRITERIA.get("cross_entropy")(None)(z, labels)
    kd.forward()
    ce.forward()
    assert float(kd.d) == float(ce.d)


# ---- in-place teacher: the supernet's largest path -------------------------------------------------------


@pytest.fixture()
def supernet(proxyless, tiny_params, digits_info):
    seed_nnabla(make_rng(5))
    net = proxyless.build_supernet(tiny_params, digits_info)
    return net, proxyless.build_lookup_table(tiny_params, digits_info).cost_model("flops")


def test_largest_path_is_the_dearest_candidate_everywhere(supernet):
    net, cost_model = supernet
    largest = largest_arch(net.choices(), cost_model)
    assert set(largest.values()) == {"MB6_K7"}  # the dearest candidate of every layer of the tiny space
    assert cost_model.cost(largest) == cost_model.max_cost()


def test_largest_path_of_a_cell_space_counts_the_gated_operations():
    """A node taking 2 of 3 edges: an edge operation costs only through its gate, so per-label additive costs alone
    (all zero) would pick "zero" everywhere; the largest cell takes the two dearest edges with their convolutions."""
    ops = Categorical(("zero", "pool", "conv"))
    choices = SearchSpaceChoices({"node": Subset(3, 2), "e0": ops, "e1": ops, "e2": ops})
    terms = tuple(
        GatedTerm("node", i, f"e{i}", {"zero": 0.0, "pool": 1.0, "conv": conv})
        for i, conv in enumerate((5.0, 2.0, 9.0))
    )
    cost = GatedCost(AdditiveCost(0.0, {}), terms, {"node": choices["node"].values})
    largest = largest_arch(choices, cost)
    assert largest == {"node": (0, 2), "e0": "conv", "e1": "conv", "e2": "conv"}
    every = [dict(zip(choices, values)) for values in itertools.product(*(c.values for c in choices.values()))]
    assert cost.cost(largest) == max(cost.cost(a) for a in every) == 14.0


def test_in_place_teacher_is_the_largest_path_and_leaves_the_student_path(supernet):
    net, cost_model = supernet
    criterion = KD(KD.Params(weight=0.5, temperature=2.0))
    rng = np.random.default_rng(0)
    student = {label: c.values[0] for label, c in net.choices().items()}  # MB3_K3 everywhere
    net.set_active(student)
    key = net.graph_key()
    x = nn.Variable.from_numpy_array(rng.standard_normal((4, 1, 8, 8)).astype(np.float32))
    teacher = criterion.teacher_logits(x, net, cost_model)
    assert net.active_arch() == student and net.graph_key() == key
    kernels = []

    def visit(f):
        if f.info.type_name in ("Convolution", "DepthwiseConvolution"):
            kernels.append(f.inputs[1].shape[-1])

    teacher.visit(visit)
    assert kernels.count(7) == 6 and kernels.count(5) == 0  # one 7x7 depthwise convolution per searchable layer
    teacher.forward()
    net.set_active(largest_arch(net.choices(), cost_model))
    reference = net(x)
    reference.forward()
    np.testing.assert_allclose(teacher.d, reference.d, rtol=1e-5, atol=1e-6)


def test_in_place_teacher_gets_no_gradient(supernet):
    """The step's gradients are those of the student's loss against constant soft targets: nothing flows through
    the teacher's graph, so the largest path's own candidates and the shared layers get the student's only."""
    net, cost_model = supernet
    criterion = KD(KD.Params(weight=0.7, temperature=3.0))
    context = StrategyContext(criterion, make_rng(0), logging.getLogger(), Monitor(None), 4, cost_model=cost_model)
    rng = np.random.default_rng(1)
    net.set_active(net.choices().sample(rng))
    x, t, logits, loss = context.loss_graph(net, 4, (1, 8, 8))
    x.d, t.d = rng.standard_normal(x.shape), rng.integers(0, 10, t.shape)
    params = net.get_parameters(grad_only=True)
    got = grads_of(loss, params)
    teacher = criterion.teacher_logits(x, net, cost_model)
    teacher.forward()
    reference = distillation_loss(net(x), t, const(teacher.d), 0.7, 3.0)
    expected = grads_of(reference, params)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
    active = set(net.active_groups())
    for group, weights in net.weight_groups().items():
        moved = any(np.abs(got[n]).sum() > 0 for n in weights)
        assert moved == (group in active), group


def test_standalone_retraining_falls_back_to_cross_entropy_and_says_so_once(caplog):
    criterion = KD(KD.Params())
    z, labels = const(np.ones((2, 3))), const([[0], [1]])
    x = nn.Variable((2, 1, 8, 8))
    with caplog.at_level(logging.INFO, logger="nas"):
        for _ in range(3):
            loss = criterion(z, labels, x=x)
    assert [r.getMessage() for r in caplog.records].count(
        "knowledge_distillation: no supernet to distil from (a standalone network): training with the hard-label "
        "cross-entropy"
    ) == 1
    loss.forward()
    assert float(loss.d) == pytest.approx(math.log(3.0), rel=1e-6)


def test_resume_equals_uninterrupted(tmp_path, proxyless, tiny_params):
    """In-place distillation keeps no state of its own; the teacher's BN statistics are weights: 2 epochs straight
    equal 1 epoch + checkpoint + a resumed loop."""
    ds = DATASETS.get("synthetic")
    data = ds(ds.Params(num_classes=4, channels=1, input_size=8, samples=80)).load()
    uniform = TRAINING_STRATEGIES.get("uniform")
    io = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)
    info = DataInfo(4, 1, 8)
    extras = {"cost_model": proxyless.build_lookup_table(tiny_params, info).cost_model("flops")}

    def fresh(epochs, seed=0):
        seed_nnabla(make_rng(7))
        net = proxyless.build_supernet(tiny_params, info)
        cfg = TrainConfig(epochs=epochs, batch_size=16, optimizer=OptimizerConfig(lr=0.05))
        criterion = KD(KD.Params(weight=0.5, temperature=2.0))
        loop = TrainLoop(net, criterion, data.train, cfg, uniform(uniform.Params()), make_rng(seed), io, "s",
                         strategy_context=extras)  # fmt: skip
        return net, loop

    net_a, straight = fresh(2)
    straight.run()
    _, first = fresh(2)
    first.cfg = TrainConfig(epochs=1, batch_size=16, optimizer=OptimizerConfig(lr=0.05))  # stop after epoch 1
    first.run()
    first.save_checkpoint(str(tmp_path))
    net_c, resumed = fresh(2, seed=99)
    resumed.load_checkpoint(str(tmp_path))
    resumed.run()
    final = net_a.get_parameters(grad_only=False)
    for name, v in net_c.get_parameters(grad_only=False).items():
        np.testing.assert_array_equal(v.d, final[name].d, err_msg=name)


# ---- checkpoint teacher --------------------------------------------------------------------------------


def test_checkpoint_teacher_is_the_saved_network_and_leaves_the_student_alone(teacher_run):
    setup, data = setup_for(raw_config())
    cfg = load_config(str(teacher_run / "config.yaml"))
    space = SEARCH_SPACES.get("ProxylessNAS")
    ckpt = read_checkpoint(str(teacher_run / "checkpoints"), "retrain")
    arch = ckpt.state["policy"]["arch"]
    student = space.build_model(cfg.search_space, data.info, arch)  # same architecture: the same parameter names
    before = {k: v.d.copy() for k, v in student.get_parameters(grad_only=False).items()}
    criterion = KD(KD.Params(teacher="checkpoint", teacher_run=str(teacher_run)))
    criterion.setup(setup)
    after = student.get_parameters(grad_only=False)
    assert all(np.array_equal(after[k].d, before[k]) for k in before)
    saved = ckpt.parameters()
    assert any(not np.array_equal(saved[k], before[k]) for k in before)  # the teacher's weights are other values
    rebuilt = space.build_model(cfg.search_space, data.info, arch)
    load_parameters(rebuilt.get_parameters(grad_only=False), ckpt.params_path)
    rebuilt.training = False
    x = nn.Variable.from_numpy_array(data.test.images[:16])
    teacher, reference = criterion.teacher_logits(x), rebuilt(x)
    teacher.forward()
    reference.forward()
    np.testing.assert_array_equal(teacher.d, reference.d)
    # the student, in training mode, gets a gradient; the teacher's own parameters none
    context = StrategyContext(criterion, make_rng(0), logging.getLogger(), Monitor(None), 8)
    student.training = True
    xs, t, _, loss = context.loss_graph(student, 8, data.train.images.shape[1:])
    xs.d, t.d = data.train.images[:8], data.train.labels[:8]
    teacher_params = criterion.teacher_model.get_parameters(grad_only=False)
    for v in teacher_params.values():
        v.grad.zero()
    student_grads = grads_of(loss, student.get_parameters(grad_only=True))
    assert all(not np.abs(v.g).any() for v in teacher_params.values())
    assert sum(np.abs(g).sum() for g in student_grads.values()) > 0


def test_checkpoint_teacher_in_a_run_and_the_refusals(teacher_run, tmp_path, capsys):
    arch_path = str(teacher_run.parent.parent / "arch.json")
    evaluate = {"arch_path": arch_path, "export_nnp": False}
    ok = raw_config(
        {"teacher": "checkpoint", "teacher_run": str(teacher_run)}, main_agent="evaluate", evaluate=evaluate
    )
    code, err = run(tmp_path, "student", ok, capsys)
    assert code == 0, err
    log = (tmp_path / "runs" / "student" / "log.txt").read_text()
    assert "knowledge_distillation: teacher ProxylessNAS {'layer_0': 'MB6_K3'" in log and str(teacher_run) in log

    def refused(title, raw, message, root=teacher_run):
        code, err = run(tmp_path, title, raw, capsys)
        assert code == 2 and err == f"error: criterion.teacher_run {root}: {message}", err
        assert not (tmp_path / "runs" / title).exists()

    def teacher(path, **extra):
        return raw_config({"teacher": "checkpoint", "teacher_run": str(path)}, **extra)

    missing = tmp_path / "nowhere"
    refused("missing", teacher(missing), "no such run directory", missing)
    refused(
        "size",
        teacher(teacher_run, dataset={"input_size": 16}),
        "the teacher was trained with dataset.input_size 8, this run uses 16; a teacher needs the same data "
        "(inputs, splits, normalisation)",
    )
    unfinished = tmp_path / "unfinished"
    shutil.copytree(teacher_run, unfinished)
    cfg = yaml.safe_load((unfinished / "config.yaml").read_text())
    cfg["retrain"]["epochs"] = 3
    (unfinished / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused(
        "unfinished",
        teacher(unfinished),
        f"its retraining is unfinished (epoch 1 of 3); finish it with --resume {unfinished}",
        unfinished,
    )
    damaged = tmp_path / "damaged"
    shutil.copytree(teacher_run, damaged)
    weights = damaged / "checkpoints" / "retrain_params.1.h5"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    refused(
        "damaged",
        teacher(damaged),
        f"{weights}: damaged (its SHA-256 differs from the one recorded when it was saved)",
        damaged,
    )
    in_place = raw_config({"teacher": "supernet_max"}, main_agent="evaluate", evaluate=evaluate)
    code, err = run(tmp_path, "nosupernet", in_place, capsys)
    assert code == 2 and err.startswith("error: criterion.teacher: supernet_max distils from the supernet's largest")
    assert not (tmp_path / "runs" / "nosupernet").exists()
    with pytest.raises(ConfigError, match="criterion.teacher_run: required with teacher: checkpoint"):
        KD(KD.Params(teacher="checkpoint"))
    with pytest.raises(ConfigError, match="criterion.teacher_run: only read with teacher: checkpoint"):
        KD(KD.Params(teacher_run=str(teacher_run)))


def test_in_place_distillation_search_run(tmp_path, capsys):
    """configs/proxylessnas_distill.yml, shortened: the teacher is named in the log, retraining says it falls back."""
    short = [f"{section}.{key}={json.dumps(value)}" for section in FAST for key, value in FAST[section].items()]
    space = [f"search_space.{key}={json.dumps(value)}" for key, value in TINY_SPACE.items()]
    args = ["-c", "configs/proxylessnas_distill.yml", "--title", "inplace", "--output-dir", str(tmp_path), "--quiet"]
    assert main.main([*args, *short, *space]) == 0, capsys.readouterr().err
    log = (tmp_path / "inplace" / "log.txt").read_text()
    assert log.count("knowledge_distillation: in-place teacher = the largest path {'layer_0': 'MB6_K7'") == 1
    assert log.count("knowledge_distillation: no supernet to distil from") == 1
    metrics = json.loads((tmp_path / "inplace" / "metrics.json").read_text())
    assert metrics["arch"] and metrics["evaluations"] >= 2 and "test_accuracy" in metrics
