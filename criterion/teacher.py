"""A distillation teacher from a finished run: its retrained network, rebuilt and loaded, checked against this run.

The run directory's ``config.yaml`` names the teacher's search space and its params; the retrain checkpoint
(``checkpoints/retrain_state.json`` and the ``retrain_params.<epoch>.h5`` it names, digests verified) holds
the trained weights and the architecture they were trained for (so the directory of a search run and of an
evaluate run both work). The network is built with its own space's ``build_model`` — the teacher may come
from another space than the student — and gets the saved weights through ``core.run_state.load_parameters``
(every name and shape must match). A Module owns its parameters, so the teacher's are its own Variables:
loading them never touches the student's.

The teacher must have been trained on the same data: the same dataset with the same splits, input size
and normalisation (every dataset field but the augmentation ones: ``augment``, ``pad``, ``flip``), so its
soft targets are in the student's input space and it never saw this run's test split.
"""

import os
from typing import Any, Tuple

import nnabla as nn
from nnabla.core.module import Module

from core.checkpoint import read_json
from core.config import load_config
from core.errors import CheckpointError, ConfigError, NASError
from core.graph import untraced
from core.registries import SEARCH_SPACES
from core.run_state import has_checkpoint, load_parameters, read_checkpoint
from core.typed import to_plain
from search_space.choices import decode_arch, encode_arch

RETRAIN = "retrain"
#: dataset fields that change only the augmentation of training batches, not what the data is
AUGMENTATION_FIELDS = ("augment", "pad", "flip")


def load_teacher(run_dir: str, run: Any) -> Tuple[Module, str]:
    """``(network, description)``: the retrained network of ``run_dir`` in inference mode; every mismatch with
    ``run`` (a ``CriterionSetup``) is one ConfigError / CheckpointError line naming ``criterion.teacher_run``."""
    where = f"criterion.teacher_run {run_dir}"
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{where}: no such run directory")
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        raise ConfigError(f"{where}: not a run directory (no config.yaml)")
    try:
        cfg = load_config(config_path)
    except NASError as err:
        raise ConfigError(f"{where}: its config.yaml does not load ({err})") from None
    _check_data(cfg, run, where)
    checkpoints = os.path.join(run_dir, "checkpoints")
    if not has_checkpoint(checkpoints, RETRAIN):
        raise ConfigError(f"{where}: holds no retrained network (no checkpoints/{RETRAIN}_state.json)")
    try:
        ckpt = read_checkpoint(checkpoints, RETRAIN)
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from None
    if ckpt.epoch < cfg.retrain.epochs:
        raise ConfigError(
            f"{where}: its retraining is unfinished (epoch {ckpt.epoch} of {cfg.retrain.epochs}); "
            f"finish it with --resume {run_dir}"
        )
    try:
        space = SEARCH_SPACES.get(cfg.agent.search_space_agent)
        saved = ckpt.state.get("policy", {}).get("arch")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{ckpt.record_path}: records no architecture")
        arch = space.choices(cfg.search_space, run.data).validate(decode_arch(encode_arch(saved)))
        state = nn.random.prng.get_state()  # the teacher's throw-away initial weights draw nothing of this run's
        try:
            model = space.build_model(cfg.search_space, run.data, arch)
        finally:
            nn.random.prng.set_state(state)
        load_parameters(model.get_parameters(grad_only=False), ckpt.params_path, what="teacher network")
    except NASError as err:
        raise type(err)(f"{where}: {err}") from None
    model.training = False
    shape = (1, run.data.in_channels, run.data.input_size, run.data.input_size)
    with untraced(), nn.no_grad():
        out_shape = model(nn.Variable(shape)).shape
    if out_shape != (1, run.data.num_classes):
        raise ConfigError(f"{where}: the teacher gives {out_shape[1:]} logits for {run.data.num_classes} classes")
    return model, f"{space.name} {dict(arch)} from {run_dir} (epoch {ckpt.epoch}{_accuracy(run_dir)})"


def _check_data(cfg: Any, run: Any, where: str) -> None:
    """The teacher's data must be this run's (augmentation aside)."""
    if cfg.agent.dataset_agent != run.dataset_name:
        raise ConfigError(
            f"{where}: the teacher was trained on dataset {cfg.agent.dataset_agent}, this run uses {run.dataset_name}"
        )
    theirs, ours = to_plain(cfg.dataset), to_plain(run.dataset_params)
    for key in ours:
        if key not in AUGMENTATION_FIELDS and theirs.get(key) != ours[key]:
            raise ConfigError(
                f"{where}: the teacher was trained with dataset.{key} {theirs.get(key)!r}, this run uses "
                f"{ours[key]!r}; a teacher needs the same data (inputs, splits, normalisation)"
            )


def _accuracy(run_dir: str) -> str:
    """``, test accuracy X`` from the run's metrics.json, if it has one."""
    try:
        value = read_json(os.path.join(run_dir, "metrics.json")).get("test_accuracy")
    except (OSError, ValueError, AttributeError):
        return ""
    return f", test accuracy {value:.4f}" if isinstance(value, (int, float)) else ""
