"""Lookup tables that can be trusted across runs: built once, saved with a fingerprint, reused only when it matches.

The fingerprint names everything a table's figures depend on: the space and its params, the input, the metrics,
and for measured metrics (latency, memory) the measurement settings and the machine (nnabla version, context,
CPU model, cores, OMP threads). ``hardware.lookup_table: PATH`` reuses a saved table whose fingerprint matches;
a missing one is built and saved there; one measured elsewhere is rebuilt (``on_mismatch: rebuild``) or refused
with one line (``refuse``); an unreadable one is one line.
"""

import dataclasses
import json
import logging
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from core.config import HardwareConfig
from core.errors import ArchitectureError, ConfigError
from hardware.measure import COUNTED_METRICS, MEASURED_METRICS, MeasureSettings, environment, measure_modules
from search_space.choices import Arch
from search_space.spec import DataInfo


def table_metrics(info_metric: str) -> tuple:
    """What a run's table holds: the counted metrics, plus the budget metric when it is measured."""
    return COUNTED_METRICS + ((info_metric,) if info_metric in MEASURED_METRICS else ())


def measure_settings(hw: HardwareConfig) -> MeasureSettings:
    """The measurement settings of the ``hardware`` section."""
    return MeasureSettings(batch_size=hw.batch_size, warmup=hw.warmup, runs=hw.runs, rounds=hw.rounds)


def fingerprint(
    space_name: str,
    params: Any,
    data: DataInfo,
    metrics: Sequence[str],
    settings: MeasureSettings,
    context: str,
    calibration_samples: int = 0,
) -> Dict[str, Any]:
    """JSON data naming everything the table's figures depend on (see the module docstring)."""
    fp: Dict[str, Any] = {
        "space": space_name,
        "params": json.loads(json.dumps(dataclasses.asdict(params), default=list)),
        "input": [data.in_channels, data.input_size, data.input_size],
        "num_classes": data.num_classes,
        "metrics": sorted(metrics),
    }
    if any(m in MEASURED_METRICS for m in metrics):
        fp["measure"] = {**dataclasses.asdict(settings), "calibration_samples": calibration_samples}
        fp["environment"] = environment(context)
    return fp


def obtain_lookup_table(
    space: Any,
    params: Any,
    data: DataInfo,
    hw: HardwareConfig,
    context: str,
    logger: logging.Logger,
    progress: bool = False,
) -> Any:
    """The run's lookup table: reused from ``hw.lookup_table`` when its fingerprint matches, else built (and saved
    there when a path is given)."""
    metrics, settings = table_metrics(hw.info_metric), measure_settings(hw)
    expected = fingerprint(space.name, params, data, metrics, settings, context, hw.calibration_samples)
    path = hw.lookup_table
    if path and os.path.exists(path):
        saved = read_table(path)
        if saved.get("fingerprint") == expected:
            try:
                table = space.table_from_dict(saved, params, data)
            except (ArchitectureError, KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"hardware.lookup_table: {path}: unreadable table ({err})") from None
            logger.info("lookup table: reused %s", path)
            return table
        differs = sorted(k for k in set(expected) | set(saved.get("fingerprint") or {})
                         if expected.get(k) != (saved.get("fingerprint") or {}).get(k))  # fmt: skip
        if hw.on_mismatch == "refuse":
            raise ConfigError(
                f"hardware.lookup_table: {path} was built for another setting (differs in: {', '.join(differs)}); "
                f"set hardware.on_mismatch: rebuild or give another path"
            )
        logger.info("lookup table: %s differs in %s; rebuilding it", path, ", ".join(differs))
    table = space.build_lookup_table(params, data, metrics, settings, progress)
    table.fingerprint = expected
    for m, fit in calibrate(table, space, params, data, settings, hw.calibration_samples).items():
        logger.info(
            "lookup table: %s calibrated on %d networks (%s model): x%.4g %+.4g (error %.1f%% -> %.1f%%)",
            m, fit["samples"], fit["model"], fit["scale"], fit["offset"], 100 * fit["raw_mape"],
            100 * fit["fitted_mape"],
        )  # fmt: skip
    if path:
        table.save(path)
        logger.info("lookup table: saved %s", path)
    return table


def read_table(path: str) -> Dict[str, Any]:
    """A saved table's JSON; one ConfigError line when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"hardware.lookup_table: cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"hardware.lookup_table: {path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(saved, dict) or "info_table" not in saved:
        raise ConfigError(f"hardware.lookup_table: {path} is not a lookup table")
    return saved


def calibration_archs(choices: Any, samples: int) -> List[Arch]:
    """The whole networks a table is calibrated on: ``samples`` draws of one fixed stream, the same for every build
    of the same space (so an accuracy report can leave them out)."""
    rng = np.random.default_rng(0)
    return [choices.sample(rng) for _ in range(samples)]


#: calibration models, simplest first: ``(name, fit)`` where ``fit(raw, real) -> (scale, offset)`` minimises the
#: squared relative errors ``(scale * raw + offset - real) / real`` within its family
def _fit_sum(raw: np.ndarray, real: np.ndarray) -> Tuple[float, float]:
    return 1.0, 0.0


def _fit_offset(raw: np.ndarray, real: np.ndarray) -> Tuple[float, float]:
    return 1.0, float(np.sum((real - raw) / real**2) / np.sum(1.0 / real**2))


def _fit_scale(raw: np.ndarray, real: np.ndarray) -> Tuple[float, float]:
    return float(np.sum(raw / real) / np.sum(raw**2 / real**2)), 0.0


def _fit_affine(raw: np.ndarray, real: np.ndarray) -> Tuple[float, float]:
    if np.ptp(raw) == 0:
        return _fit_offset(raw, real)
    scale, offset = np.polyfit(raw, real, 1, w=1.0 / real)
    return (float(scale), float(offset)) if scale > 0 else _fit_offset(raw, real)


CALIBRATION_MODELS = (("sum", _fit_sum), ("offset", _fit_offset), ("scale", _fit_scale), ("affine", _fit_affine))


def fit_calibration(raw: np.ndarray, real: np.ndarray) -> Dict[str, Any]:
    """The calibration ``measured ~ scale * raw + offset`` of the model (``CALIBRATION_MODELS``) that predicts
    networks it was not fitted on best: leave-one-out RMS relative error, the simpler model on ties.

    A free slope fitted on few networks that span a narrow range mostly fits measurement noise (and, with noisy
    sums, is biased towards zero); leave-one-out error shows it, so such a fit is not taken.
    """
    raw, real = np.asarray(raw, np.float64), np.asarray(real, np.float64)
    loo: Dict[str, float] = {}
    for name, fit in CALIBRATION_MODELS:
        if len(raw) < (3 if name == "affine" else 2):
            continue
        errors = []
        for i in range(len(raw)):
            keep = np.arange(len(raw)) != i
            scale, offset = fit(raw[keep], real[keep])
            errors.append((scale * raw[i] + offset - real[i]) / real[i])
        loo[name] = float(np.sqrt(np.mean(np.square(errors))))
    model = min(loo, key=lambda n: (loo[n], [m for m, _ in CALIBRATION_MODELS].index(n))) if loo else "sum"
    scale, offset = dict(CALIBRATION_MODELS)[model](raw, real)
    fitted = scale * raw + offset
    return {
        "model": model,
        "scale": scale,
        "offset": offset,
        "samples": int(len(raw)),
        "raw_mape": float(np.mean(np.abs(raw - real) / real)),
        "fitted_mape": float(np.mean(np.abs(fitted - real) / real)),
        "raw_rms_relative_error": float(np.sqrt(np.mean(((raw - real) / real) ** 2))),
        "fitted_rms_relative_error": float(np.sqrt(np.mean(((fitted - real) / real) ** 2))),
        "leave_one_out_rms_relative_error": loo,
    }


def calibrate(
    table: Any, space: Any, params: Any, data: DataInfo, settings: MeasureSettings, samples: int
) -> Dict[str, Dict[str, Any]]:
    """Calibrate every measured metric of ``table`` on ``samples`` random standalone networks measured whole
    (``fit_calibration``) and store the fits in ``table.calibration``.

    A per-layer sum misses what only a whole network has (the per-call overhead of one forward pass instead of
    one per layer, cache effects; for memory, peaks of different layers do not add up). Returns the fits with
    their errors on the fitted networks and their leave-one-out errors.
    """
    measured = [m for m in table.metrics if m in MEASURED_METRICS]
    if not measured or samples < 2:
        return {}
    shape = (data.in_channels, data.input_size, data.input_size)
    archs = calibration_archs(table.choices, samples)
    whole = measure_modules([(space.build_model(params, data, a), shape) for a in archs], measured, settings)
    for m in measured:
        raw = np.array([table.predict(a, m, raw=True) for a in archs])
        table.calibration[m] = fit_calibration(raw, np.array([w[m] for w in whole]))
    return table.calibration
