"""SPOS, SGNAS and MobileFaceNet: the papers' default spaces, hand counts of reference architectures, the lookup
table against the standalone networks, SGNAS's switchable BN, export, and a uniform-training smoke test."""

import json

import nnabla as nn
import numpy as np
import pytest
from test_training import make_loop, synthetic

import main
from core.config import OptimizerConfig, TrainConfig, load_config
from core.errors import ConfigError
from core.export import export_model, verify_export
from core.registries import SEARCH_SPACES, TRAINING_STRATEGIES
from hardware.counter import count_module
from search_space.sgnas.sgnas_supernet import sgnas_stages
from search_space.spec import DataInfo
from training_strategy.evaluation import evaluate_network, recalibrate_bn

DIGITS = DataInfo(10, 1, 8)
CONFIGS = {
    "SPOS": "configs/spos_uniform_evolution.yml",
    "SGNAS": "configs/sgnas_uniform_evolution.yml",
    "MobileFaceNet": "configs/mobilefacenet_uniform_evolution.yml",
}


def _halvings(macro):
    return sum(b.stride == 2 for b in macro.first) + sum(layer.stride == 2 for layer in macro.search)


def _counts(model, shape):
    counts = count_module(model, shape)
    n_params = sum(v.size for v in model.get_parameters(grad_only=True).values())
    assert counts["params"] == n_params  # every weight of the standalone network is on its graph
    return counts


# --------------------------------------------------------------------------------------------------- SPOS


def test_spos_default_is_the_papers_20_unit_shufflenet_space():
    spos = SEARCH_SPACES.get("SPOS")
    macro, micro = spos.model_cfg(spos.Params(), DataInfo(1000, 3, 224))
    assert [c.name for c in micro] == ["shuffle_k3", "shuffle_k5", "shuffle_k7", "xception"]
    assert [layer.out_channels for layer in macro.search] == [64] * 4 + [160] * 4 + [320] * 8 + [640] * 4
    assert [b.block_type for b in macro.first] == ["conv_bn_act"] and macro.first[0].out_channels == 16
    assert [(b.block_type, b.out_channels) for b in macro.last] == [
        ("conv_bn_act", 1024),
        ("gap", 1024),
        ("linear", 1000),
    ]
    assert macro.last[-1].kwargs["dropout"] == 0.1
    assert spos.choices(spos.Params(), DataInfo(1000, 3, 224)).size() == 4**20  # every unit takes all four
    for size, halvings in ((224, 5), (32, 3), (8, 1)):
        m, _ = spos.model_cfg(spos.Params(), DataInfo(10, 3, size))
        assert _halvings(m) == halvings and size // 2**halvings in (7, 4)
        assert [layer.stride for layer in m.search if layer.stride == 2] == [2] * (halvings - 1)


def test_spos_reference_arch_hand_count():
    """Stem 3x3 1->8 (8x8); unit 8->16 s2 shuffle_k3; unit 16->16 xception at 4x4; 1x1 16->32; classifier."""
    spos = SEARCH_SPACES.get("SPOS")
    params = spos.Params(first_channels=8, first_stride=1, stages=((16, 1, 2), (16, 1, 1)), last_channels=32)
    arch = {"layer_0": "shuffle_k3", "layer_1": "xception"}
    stem = 64 * 8 * 9
    # left: dw 8 3x3 s2 + 1x1 8->8 on 4x4; right: 1x1 8->8 on 8x8, dw 8 s2, 1x1 8->8 on 4x4
    unit0 = 16 * (72 + 64) + 64 * 64 + 16 * (72 + 64)
    # split form: 8 channels pass, [dw 8 3x3, 1x1 8->8] x 3 on the other 8 at 4x4
    unit1 = 16 * 3 * (72 + 64)
    head = 16 * 16 * 32 + 32 * 10
    model = spos.build_model(params, DIGITS, arch)
    assert _counts(model, (1, 8, 8))["flops"] == stem + unit0 + unit1 + head == 28096
    assert spos.build_lookup_table(params, DIGITS).predict(arch, "flops") == 28096


# -------------------------------------------------------------------------------------------------- SGNAS


def test_sgnas_default_is_the_papers_19_layer_unified_space():
    sgnas = SEARCH_SPACES.get("SGNAS")
    params = sgnas.Params()
    first, search, last = sgnas_stages(params, DataInfo(1000, 3, 224))
    assert [(b.block_type, b.out_channels, b.stride) for b in first] == [("conv_bn_act", 32, 2), ("mobile", 16, 1)]
    assert [layer.out_channels for layer in search] == [32] * 2 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    assert 224 // 2 ** (1 + sum(layer.stride == 2 for layer in search)) == 7
    assert [(b.block_type, b.out_channels) for b in last] == [("conv_bn_act", 1280), ("gap", 1280), ("linear", 1000)]
    # the decisions do not depend on widths: a narrow copy builds in a moment
    choices = sgnas.choices(sgnas.Params(width_mult=0.1), DataInfo(10, 3, 32))
    assert len(choices) == 19 * 6 and choices.labels[:7] == [f"layer_0_{j}" for j in range(6)] + ["layer_1_0"]
    assert choices["layer_4_0"].values == ("k3", "k5", "k7")  # group 0 always runs: no layer vanishes
    assert choices["layer_4_5"].values == ("k3", "k5", "k7", "skip")
    assert choices.size() == 3**19 * 4**95


TINY_SGNAS = {"first_channels": 8, "first_mb_channels": 8, "first_stride": 1, "stages": ((8, 1, 1), (16, 1, 2))}


def test_sgnas_reference_arch_hand_count():
    """Layer 0 (8->8, 8x8): group k3 + a dropped group; layer 1 (8->16, s2): groups k5 and k7."""
    sgnas = SEARCH_SPACES.get("SGNAS")
    params = sgnas.Params(**TINY_SGNAS, expansion=2, last_channels=32)
    arch = {"layer_0_0": "k3", "layer_0_1": "skip", "layer_1_0": "k5", "layer_1_1": "k7"}
    stem = 64 * 8 * 9 + 64 * 8 * 9 + 64 * 8 * 8  # conv 1->8; MB e1: dw 8 3x3, 1x1 8->8
    layer0 = 64 * 64 + 64 * 72 + 64 * 64  # expand 8->8, dw 8 3x3, project 8->8; the dropped group is free
    # per group: expand 8->8 on 8x8, dw 8 kxk s2 and project 8->16 on 4x4
    layer1 = (64 * 64 + 16 * 8 * 25 + 16 * 128) + (64 * 64 + 16 * 8 * 49 + 16 * 128)
    head = 16 * 16 * 32 + 32 * 10
    # params: stem conv + BN, MB (dw + BN, 1x1 + BN); groups (1x1 + BN, dw + BN, 1x1); one output BN per layer
    p_stem = 72 + 16 + 72 + 16 + 64 + 16
    p_layers = (64 + 16 + 72 + 16 + 64) + 16 + (64 + 16 + 200 + 16 + 128) + (64 + 16 + 392 + 16 + 128) + 32
    p_head = 512 + 64 + 330
    model = sgnas.build_model(params, DIGITS, arch)
    counts = _counts(model, (1, 8, 8))
    assert counts["flops"] == stem + layer0 + layer1 + head == 56384
    assert counts["params"] == p_stem + p_layers + p_head == 2482
    table = sgnas.build_lookup_table(params, DIGITS)
    assert (table.predict(arch, "flops"), table.predict(arch, "params")) == (56384, 2482)


def test_sgnas_switchable_bn_follows_the_number_of_dropped_groups():
    sgnas = SEARCH_SPACES.get("SGNAS")
    params = sgnas.Params(**TINY_SGNAS, expansion=3, last_channels=32)
    net = sgnas.build_supernet(params, DIGITS)
    net.training = False
    layer = net.search[0]
    assert len(layer.sbn) == 3  # 0, 1 or 2 of the 3 groups dropped
    x = nn.Variable.from_numpy_array(np.random.default_rng(0).standard_normal((2, 1, 8, 8)))
    base = {label: "k3" for label in net.choices().labels}

    def output(arch):
        net.set_active(arch)
        y = net(x)
        y.forward()
        return y.d.copy()

    one_dropped = {**base, "layer_0_2": "skip"}
    before = [output(base), output(one_dropped)]
    layer.sbn[1].get_parameters(grad_only=False)["beta"].d = 3.0  # only paths dropping exactly one group read it
    after = [output(base), output(one_dropped)]
    np.testing.assert_array_equal(before[0], after[0])
    assert np.abs(before[1] - after[1]).max() > 1e-3
    net.set_mode("full")  # every group weighted: the BN of the full width
    assert layer.bn_index() == 0
    # a standalone network keeps one BN per layer: the one its architecture reads
    model = sgnas.build_model(params, DIGITS, one_dropped)
    assert [len(m.sbn) for m in model.net.search] == [1, 1]
    counts = _counts(model, (1, 8, 8))
    assert counts["params"] == sgnas.build_lookup_table(params, DIGITS).predict(one_dropped, "params")


def test_sgnas_dropped_group_is_a_choice_not_a_zero_edge():
    """Derivation and full mode treat ``skip`` as an option (DARTS's ``none`` is excluded from both)."""
    sgnas = SEARCH_SPACES.get("SGNAS")
    net = sgnas.build_supernet(sgnas.Params(**TINY_SGNAS, expansion=2), DIGITS)
    skip = net.search[0].groups[1].candidates[3]
    assert type(skip).__name__ == "DroppedGroup" and not getattr(skip, "is_zero", False)
    with pytest.raises(ConfigError, match="search_space.kernels: kernel sizes must be odd"):
        sgnas.choices(sgnas.Params(kernels=(3, 4)), DIGITS)


# ------------------------------------------------------------------------------------------ MobileFaceNet


def test_mobilefacenet_default_space():
    mfn = SEARCH_SPACES.get("MobileFaceNet")
    params = mfn.Params()
    macro, micro = mfn.model_cfg(params, DataInfo(10, 3, 112))
    names = ["k3_e1", "k3_e2", "k3_e4", "k5_e1", "k5_e2", "k5_e4", "mix_k357_e2", "mix_k357_e4", "skip"]
    assert [c.name for c in micro] == names
    assert [(layer.out_channels, layer.stride) for layer in macro.search] == (
        [(64, 2)] + [(64, 1)] * 4 + [(128, 2)] + [(128, 1)] * 6 + [(128, 2)] + [(128, 1)] * 2
    )
    assert [(b.out_channels, b.stride, b.kwargs.get("group", 1)) for b in macro.first] == [(64, 2, 1), (64, 1, 64)]
    assert all(b.kwargs.get("activation") == "prelu" for b in macro.first)
    gdconv = macro.last[1]
    assert (gdconv.kwargs["kernel"], gdconv.kwargs["group"], gdconv.kwargs["pad"]) == (7, 512, 0)
    assert [(b.block_type, b.out_channels) for b in macro.last[2:]] == [
        ("conv_bn_act", 128),
        ("gap", 128),
        ("linear", 10),
    ]
    # the GDConv kernel follows the real feature map: 8x8 digits end at 4x4
    small, _ = mfn.model_cfg(params, DIGITS)
    assert small.last[1].kwargs["kernel"] == 4 and _halvings(small) == 1
    choices = mfn.choices(params, DataInfo(10, 3, 112))
    keeps = [layer.label for layer in macro.search if layer.in_channels == layer.out_channels and layer.stride == 1]
    assert len(keeps) == 4 + 6 + 2 and all(len(choices[label]) == 9 for label in keeps)
    assert choices.size() == 9**12 * 8**3  # skip where the shape is kept (12 layers), not at the 3 strides


def test_mobilefacenet_reference_arch_is_the_papers_221m_madds():
    """The paper's network (expansions 2, 4, 2, 4, 2 per stage, 3x3 kernels) at 112x112, counted by hand."""
    mfn = SEARCH_SPACES.get("MobileFaceNet")
    params, data = mfn.Params(), DataInfo(10, 3, 112)
    expansions = [2] * 5 + [4] + [2] * 6 + [4] + [2] * 2
    arch = {f"layer_{i}": f"k3_e{e}" for i, e in enumerate(expansions)}

    def bottleneck(cin, cout, e, size_in, size_out):  # expand on the input, dw 3x3 and project on the output
        return size_in**2 * cin * cin * e + size_out**2 * cin * e * 9 + size_out**2 * cin * e * cout

    stem = 56**2 * 64 * 27 + 56**2 * 64 * 9
    stages = (
        bottleneck(64, 64, 2, 56, 28)
        + 4 * bottleneck(64, 64, 2, 28, 28)
        + bottleneck(64, 128, 4, 28, 14)
        + 6 * bottleneck(128, 128, 2, 14, 14)
        + bottleneck(128, 128, 4, 14, 7)
        + 2 * bottleneck(128, 128, 2, 7, 7)
    )
    head = 49 * 128 * 512 + 512 * 49 + 512 * 128 + 128 * 10  # 1x1, GDConv 7x7, linear 1x1, classifier
    model = mfn.build_model(params, data, arch)
    flops = _counts(model, (3, 112, 112))["flops"]
    assert flops == stem + stages + head == 220_966_656  # the paper: 221M MAdds
    assert mfn.build_lookup_table(params, data).predict(arch, "flops") == flops


# ------------------------------------------------------------------------------------------- every space


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_space_table_equals_standalone_networks(name):
    cfg = load_config(CONFIGS[name]).validate()
    space = SEARCH_SPACES.get(name)
    assert cfg.agent.search_space_agent == name and isinstance(cfg.search_space, space.Params)
    params = cfg.search_space
    table = space.build_lookup_table(params, DIGITS)
    choices = space.choices(params, DIGITS)
    rng = np.random.default_rng(5)
    x = nn.Variable.from_numpy_array(rng.standard_normal((2, 1, 8, 8)))
    costs = []
    for _ in range(5):
        arch = choices.sample(rng)
        model = space.build_model(params, DIGITS, arch)
        counts = _counts(model, (1, 8, 8))
        assert (table.predict(arch, "flops"), table.predict(arch, "params")) == (counts["flops"], counts["params"])
        costs.append(counts["flops"])
        model.training = False
        y = model(x)
        y.forward()
        assert y.shape == (2, 10) and np.isfinite(y.d).all()
    assert len(set(costs)) > 1  # the choices change the cost
    model_cost = table.cost_model("flops")
    assert model_cost.min_cost() < cfg.hardware.target_hc < model_cost.max_cost()  # the config's budget binds


@pytest.mark.parametrize("name", list(CONFIGS))
def test_standalone_network_exports_exactly(name, tmp_path):
    space = SEARCH_SPACES.get(name)
    params = load_config(CONFIGS[name]).search_space
    arch = space.choices(params, DIGITS).sample(np.random.default_rng(2))
    model = space.build_model(params, DIGITS, arch)
    for p in model.get_parameters(grad_only=False).values():  # non-trivial BN statistics, slopes and scales
        p.d = p.d + 0.05 * np.random.default_rng(p.size).standard_normal(p.shape)
    nnp, onnx = str(tmp_path / "m.nnp"), str(tmp_path / "m.onnx")
    export_model(model, (1, 8, 8), [8.0], [4.0], nnp, onnx)
    images = np.random.default_rng(3).uniform(0, 16, (3, 1, 8, 8))
    diffs = verify_export(model, images, [8.0], [4.0], nnp, onnx)
    assert diffs["nnp_max_abs_diff"] < 1e-4 and diffs["onnx_max_abs_diff"] < 1e-4


def test_sgnas_uniform_supernet_training_learns_and_moves_only_the_path():
    sgnas = SEARCH_SPACES.get("SGNAS")
    params = sgnas.Params(**TINY_SGNAS, expansion=2, last_channels=32)
    data = synthetic(512)
    supernet = sgnas.build_supernet(params, DataInfo(4, 1, 8))
    policy = TRAINING_STRATEGIES.get("uniform")(TRAINING_STRATEGIES.get("uniform").Params())
    cfg = TrainConfig(epochs=10, batch_size=16, optimizer=OptimizerConfig(lr=0.05, weight_decay=1e-3))
    loop = make_loop(supernet, data, policy, cfg)
    before = {k: v.d.copy() for k, v in supernet.get_parameters(grad_only=True).items()}
    loop.train_step()
    active = set(policy.active_groups(supernet))
    for group, weights in supernet.weight_groups().items():
        moved = any(not np.array_equal(before[k], v.d) for k, v in weights.items())
        assert moved == (group in active), group
    history = loop.run()
    print([round(h["loss"], 3) for h in history], [round(h["valid_accuracy"], 3) for h in history])
    assert np.mean([h["loss"] for h in history[-2:]]) < history[0]["loss"] - 0.3
    # the paths score as a search scores them (BatchNorm recalibrated per path): well above chance (0.25); the
    # epochs' valid accuracy is of the last sampled path on statistics of every path, too noisy to assert on
    rng = np.random.default_rng(5)
    scores = []
    for _ in range(4):
        supernet.set_active(supernet.choices().sample(rng))
        recalibrate_bn(supernet, data.train, batch_size=32, batches=4, rng=np.random.default_rng(7))
        scores.append(evaluate_network(supernet, data.valid, 256)["accuracy"])
    assert np.mean(scores) > 0.6, scores


@pytest.mark.slow
def test_mobilefacenet_search_retrain_test(tmp_path):
    args = ["-c", CONFIGS["MobileFaceNet"], "--title", "mfn", "--output-dir", str(tmp_path), "--quiet",
            "train.epochs=1", "train.max_steps_per_epoch=4", "retrain.epochs=1", "retrain.max_steps_per_epoch=4",
            "search_strategy.population=4", "search_strategy.generations=2", "search_strategy.parents=2",
            "search.valid_batches=1"]  # fmt: skip
    assert main.main(args) == 0
    metrics = json.loads((tmp_path / "mfn" / "metrics.json").read_text())
    assert metrics["model_flops"] == metrics["flops"] <= 450000
    assert metrics["export"]["onnx_max_abs_diff"] <= 1e-4
