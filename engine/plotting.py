"""Pictures people would rather look at than read: convergence plots and image grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .imageio import to_display  # noqa: E402


def convergence_plot(path: str | Path, curves: Mapping[str, Sequence[dict[str, Any]]], *,
                     title: str = "", x: str = "evaluations", y: str = "loss", logy: bool = True) -> Path:
    """One line per run: ``y`` (loss) against ``x`` (renders spent)."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, history in curves.items():
        xs = [h[x] for h in history if h.get(y) is not None]
        ys = [h[y] for h in history if h.get(y) is not None]
        if xs:
            ax.plot(xs, ys, label=label, lw=1.5)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("renders" if x == "evaluations" else x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if len(curves) > 1 or title:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def image_grid(path: str | Path, rows: Sequence[Sequence[Any]], *, row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), cell_labels: Sequence[Sequence[str]] = (), title: str = "",
               cell: float = 1.8) -> Path:
    """A grid of linear images (``None`` leaves a cell blank), labelled rows, columns or cells."""
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell * nc, cell * nr + (0.4 if title else 0)), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            img = row[j] if j < len(row) else None
            if img is not None:
                ax.imshow(to_display(img), interpolation="nearest")
            else:
                ax.axis("off")
            if i < len(cell_labels) and j < len(cell_labels[i]):
                ax.set_title(cell_labels[i][j], fontsize=8)
            elif i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
