"""FairNAS: every step's paths use every candidate once (unequal candidate counts continue their rounds across
steps), input choices cover every input once per round, cell edges count only the passes that train them, one
step equals the summed gradients of its paths, and a stopped run resumes to the uninterrupted one."""

import dataclasses
import logging

import nnabla as nn
import numpy as np
import pytest

from core.config import OptimizerConfig, TrainConfig
from core.registries import CRITERIA, DATASETS, SEARCH_SPACES, TRAINING_STRATEGIES
from core.run_logging import Monitor
from core.seed import make_rng, seed_nnabla
from search_space.choices import Subset
from search_space.darts import DARTSParams
from search_space.enas import ENASMacroParams, ENASMicroParams
from search_space.mutables import LayerChoice
from search_space.spec import DataInfo
from training_strategy.base import StrategyContext
from training_strategy.loop import RunIO, TrainLoop

IO = RunIO(logging.getLogger("test"), Monitor(None), None, progress=False)
CE = CRITERIA.get("cross_entropy")(CRITERIA.get("cross_entropy").Params())
FAIR = TRAINING_STRATEGIES.get("fair")
INFO = DataInfo(4, 1, 8)


def synthetic(samples=192):
    ds = DATASETS.get("synthetic")
    return ds(ds.Params(num_classes=4, channels=1, input_size=8, samples=samples)).load()


def fair_policy(supernet, paths=None):
    policy = FAIR(FAIR.Params(paths=paths))
    policy.setup(supernet, StrategyContext(CE, np.random.default_rng(0), IO.logger, IO.monitor, 4))
    return policy


def drawn(policy, supernet, steps, rng):
    """Per step, the list of its paths ({label: index})."""
    out = []
    for step in range(steps):
        policy.before_step(supernet, 0, step, rng)
        out.append([dict(p) for p in policy.paths])
    return out


def test_every_step_uses_every_candidate_once_and_shorter_choices_cover_theirs_every_round(proxyless, tiny_params):
    supernet = proxyless.build_supernet(tiny_params, INFO)
    sizes = {label: len(c) for label, c in supernet.choices().items()}
    assert set(sizes.values()) == {6, 7}  # skip only where the shape is kept
    policy = fair_policy(supernet)
    assert policy.m == 7
    steps = drawn(policy, supernet, 12, np.random.default_rng(3))
    for label, c in sizes.items():
        sequence = [p[label] for paths in steps for p in paths]
        for paths in steps:
            counts = np.bincount([p[label] for p in paths], minlength=c)
            if c == 7:
                assert sorted(counts) == [1] * 7, (label, counts)  # strict fairness: a permutation per step
            else:
                assert counts.max() - counts.min() == 1, (label, counts)  # 7 passes: one candidate twice
        for r in range(len(sequence) // c):  # every round of the stream: every candidate once
            assert sorted(sequence[r * c : (r + 1) * c]) == list(range(c)), (label, r)
    # the draws are random, independent across labels, and reproducible from the generator
    first = [p["layer_0"] for p in steps[0]]
    assert first != [p["layer_1"] for p in steps[0]] or first != [p["layer_0"] for p in steps[1]]
    again = drawn(fair_policy(proxyless.build_supernet(tiny_params, INFO)), supernet, 12, np.random.default_rng(3))
    assert again == steps


def test_one_step_trains_every_candidate_once_and_sums_the_paths_gradients(proxyless):
    params = proxyless.Params(
        first_channels=8, first_mb_channels=8, stages=((8, 2, 1), (16, 2, 2)), last_channels=16, skip=False
    )
    data = synthetic()
    seed_nnabla(make_rng(1))
    supernet = proxyless.build_supernet(params, INFO)
    start = {k: v.d.copy() for k, v in supernet.get_parameters(grad_only=True).items()}
    sgd = OptimizerConfig(name="sgd", lr=0.1, weight_decay=0.0)
    cfg = TrainConfig(epochs=1, batch_size=16, grad_clip=None, lr_schedule="constant", optimizer=sgd)
    policy = FAIR(FAIR.Params())
    loop = TrainLoop(supernet, CE, data.train, cfg, policy, make_rng(0), IO, "f")
    batches, real_next = [], loop.iterator.next
    loop.iterator.next = lambda: batches.append(real_next()) or batches[-1]
    m = loop.train_step()
    assert len(batches) == 1 and policy.m == 6 and len(policy.paths) == 6
    # every candidate group is on exactly one of the six paths, the shared one on all of them
    on = [set(supernet.active_groups(mode="sample", indices=p)) for p in policy.paths]
    for group in supernet.weight_groups():
        assert sum(group in s for s in on) == (6 if group == "shared" else 1), group
    # the same step by hand on a copy: the gradients of the six paths on the batch, summed, one SGD step
    seed_nnabla(make_rng(1))
    copy = proxyless.build_supernet(params, INFO)
    weights = copy.get_parameters(grad_only=True)
    for v in weights.values():
        v.grad.zero()
    losses = []
    for path in policy.paths:
        copy.set_active({label: d.choice.values[path[label]] for label, d in copy.decisions().items()})
        copy.training = True
        x, t = nn.Variable((16, 1, 8, 8)), nn.Variable((16, 1))
        x.d, t.d = batches[0]
        loss = CE(copy(x), t)
        loss.forward()
        loss.backward()  # gradients accumulate over the paths
        losses.append(float(loss.d))
    assert m["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    after = supernet.get_parameters(grad_only=True)
    for k, v in weights.items():
        np.testing.assert_allclose(after[k].d, start[k] - 0.1 * v.g, rtol=1e-4, atol=1e-6, err_msg=k)
    for group, params in supernet.weight_groups().items():  # and every one of them moved
        assert any(not np.array_equal(v.d, start[k]) for k, v in params.items()), group
    # with accumulation, every mini-batch is drawn once and seen by all six paths
    acc = TrainLoop(supernet, CE, data.train, dataclasses.replace(cfg, mini_batch=8), FAIR(FAIR.Params()),
                    make_rng(0), IO, "f")  # fmt: skip
    fetched, fetch = [], acc.iterator.next
    acc.iterator.next = lambda: fetched.append(fetch()) or fetched[-1]
    forwards = []
    policy_passes = acc.policy.passes
    acc.policy.passes = lambda net: (forwards.append(1) or None for _ in policy_passes(net))
    acc.train_step()
    assert len(fetched) == 2 and len(forwards) == 6


def computed_sequences(supernet, steps, gate_of):
    """Per label, the values of the passes that compute it (``gate_of``: edge label -> (input label, index))."""
    seq = {label: [] for label in supernet.decisions()}
    values = {label: d.choice.values for label, d in supernet.decisions().items()}
    for paths in steps:
        for p in paths:
            for label in seq:
                gate = gate_of.get(label)
                if gate is None or gate[1] in values[gate[0]][p[gate[0]]]:
                    seq[label].append(values[label][p[label]])
    return seq


def assert_round_coverage(choice, values):
    """Each unit (candidate; input; input on/off) is used floor(u / n) or one more times after u units, and all
    equally often at every end of a round."""
    if not isinstance(choice, Subset):
        units, n = [[choice.values.index(v)] for v in values], len(choice)
        streams = [units]
    elif choice.k is None:
        n = 2
        streams = [[[int(i in v)] for v in values] for i in range(choice.n)]
    else:
        n = choice.n
        streams = [[list(v) for v in values]]
    for stream in streams:
        counts, used = np.zeros(n, int), 0
        for taken in stream:
            assert len(set(taken)) == len(taken)
            counts[taken] += 1
            used += len(taken)
            assert counts.max() - counts.min() <= 1, (choice, counts)
            if used % n == 0:
                assert counts.min() == counts.max() == used // n, (choice, counts)
        assert used >= 2 * n  # the test saw whole rounds


def test_darts_cells_cover_every_input_and_every_operation_of_the_edges_they_take():
    space = SEARCH_SPACES.get("DARTS")
    params = DARTSParams(init_channels=4, layers=3, nodes=2)
    supernet = space.build_supernet(params, DataInfo(10, 1, 8))
    supernet.set_gates(space.build_lookup_table(params, DataInfo(10, 1, 8)).path_gates)
    policy = fair_policy(supernet)
    assert policy.m == 8  # the eight DARTS operations; a node's inputs take ceil(3 / 2) = 2 passes a round
    steps = drawn(policy, supernet, 6, np.random.default_rng(0))
    gate_of = {}
    for label in supernet.decisions():
        if "_e" in label:  # normal_n1_e2 runs while normal_n1_in takes input 2
            kind_node, edge = label.rsplit("_e", 1)
            gate_of[label] = (f"{kind_node}_in", int(edge))
    seq = computed_sequences(supernet, steps, gate_of)
    for label, choice in supernet.choices().items():
        assert_round_coverage(choice, seq[label])
    # within a step too: a node of three inputs takes two in each of the 8 passes, each input 5 or 6 times
    node = supernet.choices()["normal_n1_in"]
    for paths in steps:
        counts = np.bincount([i for p in paths for i in node.values[p["normal_n1_in"]]], minlength=3)
        assert sorted(counts) in ([5, 5, 6], [5, 6, 5], [5, 6, 6]), counts


@pytest.mark.parametrize("name", ["ENASMicro", "ENASMacro"])
def test_enas_input_choices_cover_every_input_once_per_round(name):
    space = SEARCH_SPACES.get(name)
    params = ENASMicroParams(num_layers=3, num_nodes=2, out_channels=4) if name == "ENASMicro" else None
    params = params or ENASMacroParams(num_layers=6, out_filters=4)
    supernet = space.build_supernet(params, DataInfo(10, 1, 8))
    policy = fair_policy(supernet)
    steps = drawn(policy, supernet, 8, np.random.default_rng(1))
    seq = computed_sequences(supernet, steps, {})
    kinds = set()
    for label, choice in supernet.choices().items():
        if isinstance(choice, Subset) and choice.n == 1 and choice.k == 1:
            continue  # one input, nothing to choose
        assert_round_coverage(choice, seq[label])
        kinds.add("any" if isinstance(choice, Subset) and choice.k is None else type(choice).__name__)
    assert kinds == ({"Categorical", "Subset"} if name == "ENASMicro" else {"Categorical", "any"})
    if name == "ENASMacro":  # any number of inputs: each one taken in exactly half of every two passes
        taken = [1 in supernet.choices()["skip_2"].values[p["skip_2"]] for paths in steps for p in paths]
        assert sum(taken) == len(taken) // 2


def test_an_unpicked_candidates_nested_choice_keeps_its_value_for_a_pass_that_trains_it():
    from search_space.layers import ABCModule, Identity
    from search_space.searchable import Searchable

    class Nested(Searchable, ABCModule):
        def __init__(self):
            inner = LayerChoice([Identity(), Identity(), Identity()], label="inner")
            self.outer = LayerChoice([inner, Identity()], label="outer")

        def call(self, x):
            return self.outer(x)

    net = Nested()
    policy = fair_policy(net)
    steps = drawn(policy, net, 9, np.random.default_rng(2))
    inner = [p["inner"] for paths in steps for p in paths if p["outer"] == 0]
    assert policy.m == 3 and len(inner) >= 12
    for r in range(len(inner) // 3):
        assert sorted(inner[3 * r : 3 * r + 3]) == [0, 1, 2]


def test_stopped_after_one_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, proxyless, tiny_params):
    data = synthetic(160)
    cfg = TrainConfig(epochs=2, batch_size=16, max_steps_per_epoch=3, optimizer=OptimizerConfig(lr=0.05))

    def fresh(seed=0):
        seed_nnabla(make_rng(7))
        net = proxyless.build_supernet(tiny_params, INFO)
        return net, TrainLoop(net, CE, data.train, cfg, FAIR(FAIR.Params()), make_rng(seed), IO, "f")

    net_a, straight = fresh()
    straight.run()
    _, first = fresh()
    first.cfg = dataclasses.replace(cfg, epochs=1)  # stopped after epoch 1
    first.run()
    first.save_checkpoint(str(tmp_path))
    pending = first.policy.state_dict()["pending"]
    assert any(units for streams in pending.values() for units in streams)  # rounds in flight at the stop
    net_c, resumed = fresh(seed=99)
    resumed.load_checkpoint(str(tmp_path))
    resumed.run()
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    final = net_a.get_parameters(grad_only=False)
    for k, v in net_c.get_parameters(grad_only=False).items():
        np.testing.assert_allclose(v.d, final[k].d, atol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="not the network's labels"):
        resumed.policy.load_state_dict({"pending": {"layer_0": [[0]]}})
