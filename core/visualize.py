"""Architecture picture (arch.png): one box per searchable layer, coloured by the chosen candidate."""

from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_arch(arch: Mapping[str, Any], path: str, title: str = "") -> None:
    """Draw ``arch`` (label -> value) left to right and save it as a PNG."""
    labels = list(arch)
    values = [str(arch[k]) for k in labels]
    palette = plt.get_cmap("tab10")
    colours = {v: palette(i % 10) for i, v in enumerate(sorted(set(values)))}
    width = max(6.0, 0.9 * len(labels) + 1)
    fig, ax = plt.subplots(figsize=(width, 2.4))
    for i, (label, value) in enumerate(zip(labels, values)):
        ax.add_patch(plt.Rectangle((i + 0.05, 0.2), 0.9, 0.6, color=colours[value], alpha=0.85))
        ax.text(i + 0.5, 0.5, value.replace("_", "\n"), ha="center", va="center", fontsize=8)
        ax.text(i + 0.5, 0.05, label, ha="center", va="center", fontsize=6, rotation=0)
        if i:
            ax.annotate("", xy=(i + 0.05, 0.5), xytext=(i - 0.05, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(0, max(1, len(labels)))
    ax.set_ylim(0, 1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
