"""Resume after SIGKILL: killed mid-epoch, mid-checkpoint-write and mid-search, each resumed run ends exactly
where an uninterrupted run with the same seed ends (searched_arch.json, search_history.json, final weights)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.run_state import read_checkpoint, read_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "train.epochs=3",
    "train.max_steps_per_epoch=5",
    "search_strategy.population=4",
    "search_strategy.generations=3",
    "search_strategy.parents=2",
    "search.valid_batches=1",
    "search.bn_recalibration_batches=1",
    "search.retrain=false",
    "--quiet",
]

# Runs main.main in-process after arranging for the process to SIGKILL itself at the n-th call of a hook.
DRIVER = r"""
import os, signal, sys
sys.path.insert(0, os.getcwd())
import main
kind, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = {"n": 0}

def due():
    calls["n"] += 1
    return calls["n"] == n

def patch(owner, name, before):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        before(*args, **kwargs)
        return real(*args, **kwargs)
    setattr(owner, name, wrapper)

def kill(*args, **kwargs):
    if due():
        os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":  # in the middle of an epoch of supernet training
    import training_strategy.loop as m
    patch(m.TrainLoop, "train_step", kill)
elif kind == "checkpoint":  # after the data files, halfway through the commit record
    import core.run_state as m
    def half_record(path, obj):
        if due():
            d, base = os.path.split(path)
            with open(os.path.join(d, "." + base + ".kill.tmp.json"), "w") as f:
                f.write('{"format": 1, "tag": "supe')
            os.kill(os.getpid(), signal.SIGKILL)
    patch(m, "write_json", half_record)
elif kind == "search":  # between two evaluations of the search
    import agent.search_agent as m
    patch(m, "evaluate_network", kill)
elif kind == "nan":  # one batch of NaN images: the loss goes non-finite
    import dataset.base as m
    real = m.BatchIterator.next
    def poisoned(self):
        x, y = real(self)
        if due():
            x[:] = float("nan")
        return x, y
    m.BatchIterator.next = poisoned
sys.exit(main.main(argv))
"""


def start(kind, n, *argv):
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, kind, str(n), *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc):
    out, err = proc.communicate(timeout=900)
    return proc.returncode, out, err


def new_run(out, title, kind="none", n=0, extra=()):
    return start(kind, n, "-c", "configs/demo.yml", "--title", title, "--output-dir", str(out), *SMALL, *extra)


KILLS = {"mid_epoch": ("step", 8), "mid_checkpoint": ("checkpoint", 2), "mid_search": ("search", 6)}
DARTS = [
    "agent.training_strategy_agent=differentiable",
    "agent.search_strategy_agent=differentiable",
    "search_strategy={}",
    "training_strategy.algorithm=gumbel",  # noise, temperature and two iterators are all part of the state
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run and one run per kill point, each killed and then resumed (2 cores: run together)."""
    out = tmp_path_factory.mktemp("resume")
    procs = {"reference": new_run(out, "reference"), "darts_reference": new_run(out, "darts_reference", extra=DARTS)}
    procs.update({name: new_run(out, name, kind, n) for name, (kind, n) in KILLS.items()})
    procs["darts_mid_epoch"] = new_run(out, "darts_mid_epoch", "step", 8, extra=DARTS)
    results = {name: finish(p) for name, p in procs.items()}
    for name in ("reference", "darts_reference"):
        assert results[name][0] == 0, results[name][2]
    for name in [*KILLS, "darts_mid_epoch"]:
        assert results[name][0] == -9, f"{name} was not killed: {results[name]}"
    resumed = {name: start("none", 0, "--resume", str(out / name), "--quiet") for name in [*KILLS, "darts_mid_epoch"]}
    return out, {name: finish(p) for name, p in resumed.items()}


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KILLS))
def test_killed_run_resumes_to_the_uninterrupted_result(runs, name):
    out, resumed = runs
    code, _, err = resumed[name]
    assert code == 0, err
    ref, run = out / "reference", out / name
    assert read(run, "searched_arch.json") == read(ref, "searched_arch.json")
    assert read(run, "search_history.json") == read(ref, "search_history.json")
    final_ref = read_parameters(str(ref / "checkpoints" / "supernet_params.3.h5"))
    final = read_parameters(str(run / "checkpoints" / "supernet_params.3.h5"))
    assert list(final) == list(final_ref)
    for k in final_ref:
        np.testing.assert_allclose(final[k], final_ref[k], rtol=0, atol=1e-6, err_msg=k)
    leftovers = [f for d in (run, run / "checkpoints") for f in os.listdir(d) if ".tmp" in f]
    assert leftovers == []
    log = (run / "log.txt").read_text()
    if name == "mid_search":
        assert "[supernet] resumed after epoch 3" in log and "replaying 5 journaled evaluations" in log
    else:
        assert "[supernet] resumed after epoch 1" in log
    assert "resuming run" in log


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_the_last_checkpoint_resumes(runs, tmp_path):
    out, _ = runs
    # a demo step is 2 passes of 16 on 2 workers (train.mini_batch): supernet steps 1-5 (batches 1-10) are epoch 1
    # (checkpointed); batch 13, the first of epoch 2, step 2, is NaN
    code, _, err = finish(new_run(tmp_path, "nan", "nan", 13))
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: [supernet] non-finite loss"), err
    assert "epoch 2, step 2" in lines[0] and "checkpoint of epoch 1 is intact" in lines[0]
    code, _, err = finish(start("none", 0, "--resume", str(tmp_path / "nan"), "--quiet"))
    assert code == 0, err
    # the poisoned step was never applied, so the resumed run is the uninterrupted one
    assert read(tmp_path / "nan", "searched_arch.json") == read(out / "reference", "searched_arch.json")


@pytest.mark.slow
def test_killed_differentiable_run_resumes_to_the_same_alphas(runs):
    out, resumed = runs
    code, _, err = resumed["darts_mid_epoch"]
    assert code == 0, err
    ref, run = out / "darts_reference", out / "darts_mid_epoch"
    assert read(run, "searched_arch.json") == read(ref, "searched_arch.json")
    alphas_ref = read_checkpoint(str(ref / "checkpoints"), "supernet").state
    alphas = read_checkpoint(str(run / "checkpoints"), "supernet").state
    for label, value in alphas_ref["arch_parameters"].items():
        assert np.abs(value).max() > 0  # they were trained
        np.testing.assert_allclose(alphas["arch_parameters"][label], value, rtol=0, atol=1e-6, err_msg=label)
    np.testing.assert_allclose(alphas["policy"]["tau"], alphas_ref["policy"]["tau"])
