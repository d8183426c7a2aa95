"""Pictures of a run: the whole network (arch.png), the search progress (search.png), cost vs objective (pareto.png),
lookup-table accuracy (lut_accuracy.png) and supernet vs standalone ranking (rank_quality.png).

Figures are built as ``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot, so no global figure
state is kept (nothing to close, nothing leaks between calls) and importing this module changes no backend.
"""

import math
from typing import Any, Dict, List, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from core.checkpoint import atomic_path
from core.pareto import pareto_front

_FIXED_FACE, _FIXED_EDGE = "#ececec", "#8c8c8c"
_PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip


def human(value: float | None, digits: int = 2) -> str:
    """Compact number with about ``digits`` significant digits: 1.2M, 35k, 512 (1.16M with ``digits=3``)."""
    if value is None or math.isnan(value):
        return "n/a"
    units = ((1e9, "G"), (1e6, "M"), (1e3, "k"))
    scale, suffix = next(((s, u) for s, u in units if abs(value) >= s), (1.0, ""))
    scaled = value / scale
    decimals = max(0, digits - 1 - int(math.log10(abs(scaled)))) if scaled else 0
    text = f"{scaled:.{decimals}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix


def _save(fig: Figure, path: str, dpi: int = 130) -> None:
    """Write ``fig`` as a PNG atomically (the temporary name ends in .png too)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _note(fig: Figure, text: str) -> None:
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#666666")


# ---------------------------------------------------------------------------------------------- arch.png


def plot_arch(
    rows: Sequence[Mapping[str, Any]],
    path: str,
    title: str = "",
    candidates: Sequence[str] | None = None,
    per_row: int = 8,
) -> None:
    """Draw the whole network from ``hardware.summary.network_summary`` rows, ``per_row`` boxes a line.

    ``candidates`` (every candidate name of the space, in order) keeps each candidate's colour the same
    across architectures; without it the colours follow the sorted names this network uses.
    """
    rows = list(rows)
    used = {r["name"] for r in rows if r["stage"] == "search"}
    order = list(dict.fromkeys(candidates or ())) + sorted(used - set(candidates or ()))
    colour = {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(order)}
    names = [n for n in order if n in used]
    nrows = max(1, math.ceil(len(rows) / per_row))
    ncols = max(1, math.ceil(len(rows) / nrows))  # balanced lines: 11 blocks give 6 + 5, not 8 + 3
    # one data unit is one inch: box sizes and font sizes stay in proportion whatever the block count
    box_w, box_h, gap_x, gap_y, margin, top, bottom = 1.55, 0.95, 0.35, 0.6, 0.3, 0.75, 0.55
    width = 2 * margin + ncols * box_w + (ncols - 1) * gap_x
    height = top + bottom + nrows * box_h + (nrows - 1) * gap_y
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")

    def corner(i: int) -> "tuple[float, float]":
        r, c = divmod(i, ncols)
        return margin + c * (box_w + gap_x), height - top - box_h - r * (box_h + gap_y)

    for i, row in enumerate(rows):
        x, y = corner(i)
        searched = row["stage"] == "search"
        face = colour[row["name"]] if searched else _FIXED_FACE
        edge = colour[row["name"]] if searched else _FIXED_EDGE
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                box_w,
                box_h,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor=face,
                alpha=0.35 if searched else 1.0,
                edgecolor="none",
            )
        )
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                box_w,
                box_h,
                boxstyle="round,pad=0,rounding_size=0.08",
                facecolor="none",
                edgecolor=edge,
                linewidth=1.6 if searched else 1.0,
                linestyle="-" if searched else (0, (3, 2)),
            )
        )
        tag = row["label"] if searched else f"{row['stage']} stage"
        ax.text(x + 0.06, y + box_h + 0.04, tag, fontsize=6.5, color="#555555", va="bottom")
        size = row.get("input_size")
        shape = f"{row['in_channels']}→{row['out_channels']}  s{row['stride']}"
        if size:
            shape += f"  @{size}×{size}"
        cost = f"{human(row['flops'])} FLOPs\n{human(row['params'])} params"
        cx = x + box_w / 2
        ax.text(cx, y + box_h - 0.12, row["name"], ha="center", va="top", fontsize=8, fontweight="bold")
        ax.text(cx, y + box_h - 0.36, shape, ha="center", va="top", fontsize=6.8)
        ax.text(cx, y + 0.08, cost, ha="center", va="bottom", fontsize=6.5, color="#333333", linespacing=1.15)
        if i + 1 < len(rows):
            _connect(ax, corner(i), corner(i + 1), box_w, box_h)

    total_flops = sum(float(r["flops"]) for r in rows)
    total_params = sum(float(r["params"]) for r in rows)
    heading = f"{title}\n" if title else ""
    heading += f"{len(rows)} blocks · {human(total_flops)} FLOPs · {human(total_params)} params"
    ax.text(width / 2, height - 0.12, heading, ha="center", va="top", fontsize=9.5)
    handles = [Patch(facecolor=_FIXED_FACE, edgecolor=_FIXED_EDGE, linestyle="--", label="fixed")]
    handles += [Patch(facecolor=colour[n], edgecolor=colour[n], alpha=0.6, label=n) for n in names]
    ax.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(handles), 9),
        fontsize=7,
        frameon=False,
        handlelength=1.4,
        columnspacing=1.2,
    )
    _save(fig, path)


def _connect(ax: Any, a: "tuple[float, float]", b: "tuple[float, float]", box_w: float, box_h: float) -> None:
    """Arrow from box ``a`` to box ``b``: straight within a line, bent down and back to the left at a wrap."""
    style = {"arrowstyle": "-|>", "color": "#555555", "lw": 0.9, "shrinkA": 0, "shrinkB": 0}
    (ax_, ay), (bx, by) = a, b
    if abs(ay - by) < 1e-9:
        ax.annotate("", xy=(bx, by + box_h / 2), xytext=(ax_ + box_w, ay + box_h / 2), arrowprops=style)
        return
    mid = (ay + by + box_h) / 2 - 0.1  # below the next line's tags
    xs = [ax_ + box_w / 2, ax_ + box_w / 2, bx + box_w / 2]
    ys = [ay, mid, mid]
    ax.plot(xs, ys, color=style["color"], lw=style["lw"], solid_joinstyle="round")
    ax.annotate("", xy=(bx + box_w / 2, by + box_h), xytext=(bx + box_w / 2, mid), arrowprops=style)


# ---------------------------------------------------------------------------------------------- search.png


def search_curves(history: Sequence[Mapping[str, Any]], objective: str = "accuracy") -> Dict[str, Any]:
    """The series ``plot_search`` draws, as plain lists (also what goes to TensorBoard).

    Evolution-like history (some ``generation`` > 0): ``{"by": "generation", "step": generations,
    "series": {"best": best-so-far, "mean": mean of that generation}, "points": ...}``. Otherwise
    ``{"by": "evaluation", "step": 1..n, "series": {"objective": value, "best": running best}, "points": ...}``.
    ``points`` = ``{"step", "value"}`` of every evaluation. NaN objectives are skipped by best and mean.
    """
    values = [float(e["metrics"][objective]) for e in history]
    gens = [int(e.get("generation") or 0) for e in history]
    if any(g > 0 for g in gens):
        steps = sorted(set(gens))
        best, mean, running = [], [], math.nan
        for g in steps:
            vals = [v for v, gg in zip(values, gens) if gg == g and not math.isnan(v)]
            running = _max(running, *vals)
            best.append(running)
            mean.append(sum(vals) / len(vals) if vals else math.nan)
        return {
            "by": "generation",
            "step": steps,
            "series": {"best": best, "mean": mean},
            "points": {"step": gens, "value": values},
        }
    steps = list(range(1, len(values) + 1))
    best, running = [], math.nan
    for v in values:
        running = _max(running, v)
        best.append(running)
    return {
        "by": "evaluation",
        "step": steps,
        "series": {"objective": values, "best": best},
        "points": {"step": list(steps), "value": values},
    }


def _max(current: float, *values: float) -> float:
    """Largest of ``current`` and ``values`` ignoring NaN (NaN only if all are NaN)."""
    finite = [v for v in (current, *values) if not math.isnan(v)]
    return max(finite) if finite else math.nan


def plot_search(history: Sequence[Mapping[str, Any]], path: str, objective: str = "accuracy") -> None:
    """Objective over the search: best-so-far and mean per generation (evolution) or per evaluation (random)."""
    curves = search_curves(history, objective)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if not history:
        _note(fig, "no architecture evaluated")
        ax.axis("off")
        _save(fig, path)
        return
    steps, series, pts = curves["step"], curves["series"], curves["points"]
    if curves["by"] == "generation":
        ax.scatter(_spread(pts["step"]), pts["value"], s=14, color="#9aa5b1", alpha=0.7, label="evaluation", zorder=2)
        ax.plot(steps, series["mean"], "o--", color="#4e79a7", ms=4, lw=1.3, label="generation mean", zorder=3)
        ax.plot(steps, series["best"], "o-", color="#e15759", ms=4, lw=1.8, label="best so far", zorder=4)
        ax.set_xlabel("generation")
    else:
        ax.plot(steps, series["objective"], "o", color="#4e79a7", ms=3.5, alpha=0.7, label="evaluation", zorder=2)
        ax.step(steps, series["best"], where="post", color="#e15759", lw=1.8, label="best so far", zorder=3)
        ax.set_xlabel("evaluation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(objective)
    best = series["best"][-1]
    ax.set_title(f"search: best {objective} {best:.4g} after {len(history)} evaluations", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    _save(fig, path)


def _spread(steps: Sequence[int], width: float = 0.5) -> List[float]:
    """Deterministic horizontal jitter so evaluations of one generation do not hide each other."""
    counts: Dict[int, int] = {}
    for s in steps:
        counts[s] = counts.get(s, 0) + 1
    seen: Dict[int, int] = {}
    out = []
    for s in steps:
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.append(s + (width * ((k + 0.5) / counts[s] - 0.5) if counts[s] > 1 else 0.0))
    return out


# ---------------------------------------------------------------------------------------------- pareto.png


def plot_pareto(
    history: Sequence[Mapping[str, Any]],
    path: str,
    objective: str = "accuracy",
    metric: str = "flops",
    target: float | None = None,
    chosen: Mapping[str, Any] | None = None,
) -> None:
    """Every evaluated architecture as objective vs cost, the Pareto front, the budget and the chosen one."""
    entries = [(e, _cost(e, metric)) for e in history]
    entries = [(e, c) for e, c in entries if c is not None]
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    if not entries:
        _note(fig, f"no evaluated architecture has a {metric} cost")
        ax.axis("off")
        _save(fig, path)
        return
    costs = [c for _, c in entries]
    values = [float(e["metrics"][objective]) for e, _ in entries]
    gens = [int(e.get("generation") or 0) for e, _ in entries]
    if max(gens) > 0:
        sc = ax.scatter(costs, values, c=gens, cmap="viridis", s=18, alpha=0.8, label="evaluated", zorder=2)
        fig.colorbar(sc, ax=ax, pad=0.02).set_label("generation")
    else:
        ax.scatter(costs, values, s=18, color="#4e79a7", alpha=0.7, label="evaluated", zorder=2)
    front = pareto_front(list(zip(values, costs)))
    if front:
        fx, fy = [costs[i] for i in front], [values[i] for i in front]
        ax.step(fx, fy, where="post", color="#e15759", lw=1.4, zorder=3, label="Pareto front")
        ax.scatter(fx, fy, s=40, facecolor="none", edgecolor="#e15759", lw=1.2, zorder=4)
    if target is not None:
        ax.axvline(target, color="#333333", ls="--", lw=1.1, label=f"budget {metric} ≤ {human(target)}", zorder=1)
    if chosen is not None:
        hit = [i for i, (e, _) in enumerate(entries) if dict(e["arch"]) == dict(chosen)]
        if hit:
            i = hit[0]
            ax.scatter(
                [costs[i]], [values[i]], marker="*", s=260, color="#f2b701", edgecolor="black", lw=0.8, zorder=5,
                label=f"chosen ({values[i]:.4g}, {human(costs[i], 3)})",
            )  # fmt: skip
    if target is not None:
        lo, hi = ax.get_xlim()
        if target < hi:
            ax.axvspan(target, hi, color="#999999", alpha=0.12, lw=0, zorder=0)
        ax.set_xlim(lo, max(hi, target * 1.02))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human(x)))
    ax.set_xlabel(metric)
    ax.set_ylabel(objective)
    ax.set_title(f"{len(entries)} architectures: {objective} vs {metric}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    _save(fig, path)


def _cost(entry: Mapping[str, Any], metric: str) -> float | None:
    """The entry's budget cost, else its measured ``metric``, else None."""
    cost = entry.get("cost")
    if cost is None:
        cost = entry.get("metrics", {}).get(metric)
    return None if cost is None else float(cost)


# --------------------------------------------------------------------------------------- lut_accuracy.png


def plot_lut_accuracy(report: Mapping[str, Any], path: str) -> None:
    """Predicted against measured cost of every validated network (``hardware.validate`` report), raw and
    calibrated, with the identity line and the figures of each."""
    nets = report["networks"]
    measured = [n["measured"] for n in nets]
    metric, unit = report["metric"], report["unit"]
    fig = Figure(figsize=(5.6, 5.0), layout="constrained")
    ax = fig.add_subplot()
    series = [("raw", "predicted_raw", "#bab0ac", "o")]
    if "calibrated" in report:
        series.append(("calibrated", "predicted", "#4e79a7", "s"))
    values = list(measured)
    for kind, key, colour, marker in series:
        f = report[kind]
        predicted = [n[key] for n in nets]
        values += predicted
        label = f"{kind}: Spearman {f['spearman']:.3f}, MAPE {100 * f['mape']:.1f}%"
        ax.scatter(measured, predicted, s=20, color=colour, marker=marker, alpha=0.85, label=label, zorder=2)
    lo, hi = min(values), max(values)
    pad = 0.04 * (hi - lo or abs(hi) or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#333333", lw=1.0, ls="--", label="exact", zorder=1)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: human(x, 3)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: human(x, 3)))
    ax.set_xlabel(f"measured {metric} ({unit})")
    ax.set_ylabel(f"lookup-table {metric} ({unit})")
    ax.set_title(f"{report['search_space']}: {report['samples']} whole networks, input {report['input']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    _save(fig, path)


# --------------------------------------------------------------------------------------- rank_quality.png


def plot_rank_quality(report: Mapping[str, Any], path: str) -> None:
    """Supernet score against standalone accuracy of every architecture of a ``rank_quality.json`` report,
    coloured by cost and numbered by cost level, titled with Kendall's tau, Spearman's rho and the top-k overlap."""
    archs, stats, metric = report["architectures"], report["statistics"], report["settings"]["metric"]
    x = [a["supernet_accuracy"] for a in archs]
    y = [a["standalone_accuracy"] for a in archs]
    fig = Figure(figsize=(6.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    sc = ax.scatter(x, y, c=[a["cost"] for a in archs], cmap="viridis", s=42, edgecolor="black", lw=0.5, zorder=2)
    bar = fig.colorbar(sc, ax=ax, pad=0.02, format=FuncFormatter(lambda v, _: human(v)))
    bar.set_label(metric)
    for a, xi, yi in zip(archs, x, y):
        ax.annotate(str(a["index"]), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7, color="#444444")
    shown = {k: "n/a" if stats[k] is None else f"{stats[k]:.3f}" for k in ("kendall_tau", "spearman")}
    ax.set_title(
        f"{len(archs)} architectures: Kendall τ {shown['kendall_tau']}, Spearman {shown['spearman']}, "
        f"top-{stats['top_k']} overlap {stats['top_k_overlap']:.2f}",
        fontsize=10,
    )
    ax.set_xlabel("supernet accuracy (valid, BatchNorm recalibrated)")
    ax.set_ylabel("standalone test accuracy (retrained)")
    ax.grid(alpha=0.3)
    _save(fig, path)
