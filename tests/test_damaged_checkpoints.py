"""Damaged run state: every damaged checkpoint file, commit record or journal line refuses ``--resume`` with ONE
stderr line naming the file (or key), exit 2, no traceback, and the run directory byte for byte as it was; once
the file is restored from a pristine copy the same run directory resumes."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
from test_main import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = [*TINY, "retrain.epochs=1", "search.retrain=true", "dataset.input_size=8"]
#: a resume that succeeds skips the export (a resumable key): the checkpoints are what is under test
RESUME_OK = ["--quiet", "evaluate.export_nnp=false"]
#: what an interrupted atomic write (core.checkpoint.atomic_path) leaves behind
TEMPORARIES = ("checkpoints/.supernet_params.2.abcd.tmp.h5", ".metrics.json.xyz.tmp.json")


def run_main(*args):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished search run (2 supernet epochs, 8 journaled evaluations, 1 retrain epoch); never modified."""
    out = tmp_path_factory.mktemp("damaged")
    res = run_main("-c", "configs/demo.yml", "--title", "pristine", "--output-dir", str(out), "--quiet", *RUN)
    assert res.returncode == 0, res.stderr
    run_dir = out / "pristine"
    names = set(os.listdir(run_dir / "checkpoints"))
    assert {"supernet_params.2.h5", "supernet_arrays.2.h5", "retrain_params.1.h5", "retrain_arrays.1.h5"} <= names
    return run_dir


def snapshot(run_dir):
    """{relative path: sha256} of every file, and every directory, under ``run_dir``."""
    out = {}
    for parent, dirs, files in os.walk(run_dir):
        for d in dirs:
            out[os.path.relpath(os.path.join(parent, d), run_dir)] = "<dir>"
        for f in files:
            path = os.path.join(parent, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, run_dir)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def resolve(run_dir, pattern):
    """The one checkpoint file matching ``pattern`` (e.g. ``supernet_params.*.h5``)."""
    found = sorted((run_dir / "checkpoints").glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


# --- damages: each takes the file's path and damages it in place ------------------------------------------------


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path):
    path.write_bytes(b"")


def delete(path):
    path.unlink()


def not_json(path):
    path.write_text("this is not JSON\n")


def garbage_middle_line(path):
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[len(lines) // 2] = "}{ garbage\n"
    path.write_text("".join(lines))


def drop_nested(*keys):
    def damage(path):
        record = json.loads(path.read_text())
        node = record
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
        path.write_text(json.dumps(record))

    damage.__name__ = "drop_" + "_".join(keys)
    return damage


def record_epoch(epoch):
    def damage(path):
        record = json.loads(path.read_text())
        record["epoch"] = epoch
        path.write_text(json.dumps(record))

    damage.__name__ = f"epoch_{epoch}"
    return damage


@dataclass(frozen=True)
class Case:
    """Damage ``pattern``'s file (or pass ``args`` to the resume); the error line must name the file and ``names``."""

    pattern: str | None
    damage: Callable | None = None
    names: Tuple[str, ...] = ()
    args: Tuple[str, ...] = ()
    #: afterwards restore the file from the pristine run (and drop ``args``) and resume successfully
    restore: bool = False

    @property
    def id(self):
        what = self.pattern.replace(".*", "") if self.pattern else "override"
        how = self.damage.__name__ if self.damage else "-".join(self.args)
        return f"{what}-{how}"


DATA_FILES = ["supernet_params.*.h5", "supernet_arrays.*.h5", "retrain_params.*.h5", "retrain_arrays.*.h5"]
RECORDS = ["supernet_state.json", "retrain_state.json"]
CASES = [Case(f, d, restore=d is truncate) for f in DATA_FILES for d in (truncate, empty, delete)]
CASES += [Case(f, d, restore=d is truncate) for f in RECORDS for d in (truncate, not_json)]
CASES += [Case(f, drop_nested(k), names=(repr(k),)) for f in RECORDS for k in ("files", "sha256", "state")]
CASES += [
    Case("retrain_state.json", delete, names=("missing", "metrics.json")),
    Case("supernet_state.json", drop_nested("state", "solver"), names=("damaged state", "'solver'")),
    Case("supernet_state.json", record_epoch(3), names=("names epoch 3", "state is of epoch 2")),
    Case("search_journal.jsonl", garbage_middle_line, names=("damaged search journal", "line 5"), restore=True),
    Case(None, args=("search_space.width_mult=0.5",), names=("search_space.width_mult", "cannot change"), restore=True),
    Case(None, args=("train.epochs=1",), names=("supernet_state.json", "past the 1 configured epochs")),
]


@dataclass
class Outcome:
    """What one case did: the run copy, the damaged file, snapshots around the refused resume, the later resume."""

    run_dir: Path
    path: Path | None
    before: Dict[str, str]
    refused: subprocess.CompletedProcess
    after: Dict[str, str]
    resumed: subprocess.CompletedProcess | None


def copy_run(pristine, run_dir):
    """A copy of the pristine run with the temporaries of an interrupted write planted in it."""
    shutil.copytree(pristine, run_dir)
    for name in TEMPORARIES:
        (run_dir / name).write_bytes(b"half-written")
    return run_dir


def play(pristine, run_dir, case):
    """Copy, damage, snapshot, resume (refused), snapshot again; then restore and resume if the case says so."""
    copy_run(pristine, run_dir)
    path = resolve(run_dir, case.pattern) if case.pattern else None
    if case.damage:
        case.damage(path)
    before = snapshot(run_dir)
    refused = run_main("--resume", str(run_dir), "--quiet", *case.args)
    after = snapshot(run_dir)
    resumed = None
    if case.restore:
        if path is not None:
            shutil.copy2(resolve(pristine, case.pattern), path)
        resumed = run_main("--resume", str(run_dir), *RESUME_OK)
    return Outcome(run_dir, path, before, refused, after, resumed)


@pytest.fixture(scope="module")
def outcomes(pristine, tmp_path_factory):
    """Every case played on its own copy, two at a time (each resume is a single-threaded process)."""
    base = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return {case.id: pool.submit(play, pristine, base / case.id, case) for case in CASES}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_damage_refuses_resume_with_one_line_and_changes_nothing(pristine, outcomes, case):
    out = outcomes[case.id].result()
    res = out.refused
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for name in ((str(out.path),) if out.path else ()) + case.names:
        assert name in lines[0], (name, lines[0])
    assert out.after == out.before  # byte for byte, config.yaml, log.txt and the planted temporaries included
    if case.restore:
        assert out.resumed.returncode == 0, out.resumed.stderr
        log = (out.run_dir / "log.txt").read_text()
        # continued from the checkpoints and the journal: nothing retrained or re-evaluated
        assert "[supernet] resumed after epoch 2" in log and "replaying 8 journaled evaluations" in log
        assert "[retrain] resumed after epoch 1" in log
        for name in ("searched_arch.json", "search_history.json"):
            assert (out.run_dir / name).read_bytes() == (pristine / name).read_bytes()
        metrics, reference = (json.loads((d / "metrics.json").read_text()) for d in (out.run_dir, pristine))
        assert metrics["test_accuracy"] == reference["test_accuracy"]


def test_leftover_temporaries_are_removed_by_a_successful_resume(outcomes):
    out = outcomes[Case(None, args=("search_space.width_mult=0.5",)).id].result()
    assert out.resumed.returncode == 0, out.resumed.stderr
    for name in TEMPORARIES:
        assert name in out.before and name in out.after  # planted, and kept by the refused resume
        assert not (out.run_dir / name).exists()
    log = (out.run_dir / "log.txt").read_text()
    for name in TEMPORARIES:
        assert f"removed {os.path.basename(name)} left by an interrupted write" in log
