"""The README's compatibility tables are what the code does: every (space, training strategy) pair and every
(training strategy, search strategy) pair the tables mark as supported trains and searches for a few steps, and
every pair they mark unsupported is refused with one line before anything is written."""

import math
import os
import re

import numpy as np
import pytest
from test_search_space import small_params

from core.config import build_config
from core.errors import ConfigError
from core.registries import AGENTS, SEARCH_SPACES, SEARCH_STRATEGIES, TRAINING_STRATEGIES
from core.run_logging import setup_logger
from core.typed import to_plain

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
#: tiny settings of the strategies (a handful of evaluations)
SEARCH_PARAMS = {
    "random": {"samples": 3},
    "evolution": {"population": 3, "generations": 2, "parents": 1},
    "reinforce": {"steps": 2, "batch": 2},
    "architecture_generator": {"steps": 2, "targets": 2, "samples": 2},
    "differentiable": {},
}


def table(title):
    """``{row: {column: cell}}`` of the README table under the line ``title``."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    block = text[text.index(title) :].split("\n\n")[1]
    lines = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in block.splitlines()]
    header, rows = lines[0], lines[2:]
    return {r[0]: dict(zip(header[1:], r[1:])) for r in rows}


SPACES = table("Search spaces × training strategies:")
SEARCHES = table("Training strategies × search strategies:")


def config(space, training, search, training_params=None):
    sp = SEARCH_SPACES.get(space)
    return build_config(
        {
            "agent": {
                "search_space_agent": space,
                "training_strategy_agent": training,
                "search_strategy_agent": search,
                "dataset_agent": "synthetic",
            },
            "dataset": {"num_classes": 4, "channels": 1, "input_size": 8, "samples": 128},
            "search_space": to_plain(small_params(sp)),
            "training_strategy": training_params or {},
            "search_strategy": SEARCH_PARAMS[search],
            "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2},
            "search": {"valid_batches": 1, "eval_batch_size": 32, "retrain": False},
            "hardware": {"info_metric": "flops"},
        }
    ).validate()


def run_pair(tmp_path, space, training, search, training_params=None):
    """Build the search agent (every check), train two steps and search; the search's best metrics."""
    setup_logger(verbose=False)
    agent = AGENTS.get("search")(config(space, training, search, training_params), str(tmp_path), progress=False)
    os.makedirs(tmp_path, exist_ok=True)
    before = {k: v.d.copy() for k, v in agent.supernet.get_parameters(grad_only=True).items()}
    agent.train_supernet()
    assert all(math.isfinite(h["loss"]) for h in agent.loop.history)
    after = agent.supernet.get_parameters(grad_only=True)
    assert any(not np.array_equal(after[k].d, v) for k, v in before.items())  # the steps trained weights
    result = agent.search()
    assert result.evaluations >= 1 and agent.budget.within(result.best_arch)
    assert result.best_arch in [h["arch"] for h in result.history] or search == "differentiable"
    return result


def test_the_tables_cover_every_registered_component():
    assert sorted(SPACES) == sorted(n for n in SEARCH_SPACES.names())
    assert all(sorted(row) == TRAINING_STRATEGIES.names() for row in SPACES.values())
    assert sorted(SEARCHES) == TRAINING_STRATEGIES.names()
    assert all(sorted(row) == SEARCH_STRATEGIES.names() for row in SEARCHES.values())


@pytest.mark.parametrize(
    "space, training", [(s, t) for s in sorted(SPACES) for t in sorted(SPACES[s])], ids=lambda v: str(v)
)
def test_space_and_training_strategy(tmp_path, space, training):
    cell = SPACES[space][training]
    search = "differentiable" if TRAINING_STRATEGIES.get(training).learns_arch_parameters else "random"
    if cell == "✓":
        run_pair(tmp_path / "run", space, training, search)
    elif cell.startswith("estimator: "):  # supported with that estimator; the default is refused by name
        with pytest.raises(ConfigError, match="estimator"):
            run_pair(tmp_path / "refused", space, training, search)
        run_pair(tmp_path / "run", space, training, search, {"estimator": cell.split(": ")[1]})
    else:
        assert cell == "–", cell
        with pytest.raises(ConfigError):
            run_pair(tmp_path / "refused", space, training, search)
    assert not os.path.exists(tmp_path / "refused")  # a refused run writes nothing


@pytest.mark.parametrize(
    "training, search", [(t, s) for t in sorted(SEARCHES) for s in sorted(SEARCHES[t])], ids=lambda v: str(v)
)
def test_training_and_search_strategy(tmp_path, training, search):
    cell = SEARCHES[training][search]
    if cell == "✓":
        run_pair(tmp_path / "run", "ProxylessNAS", training, search)
    else:
        assert cell == "–", cell
        with pytest.raises(ConfigError, match=re.escape(search)):
            run_pair(tmp_path / "refused", "ProxylessNAS", training, search)
        assert not os.path.exists(tmp_path / "refused")
