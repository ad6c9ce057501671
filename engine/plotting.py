"""Pictures people would rather look at than read: convergence plots and image grids.

The one place rendergrad draws: run folders, reports, ``rendergrad compare``, the demo and the
benchmarks all call these functions, so every picture of a run looks the same. Each function
takes a file path or a binary file object (a report embeds the PNG without writing it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Any, Mapping, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .imageio import to_display  # noqa: E402

Target = Union[str, Path, IO[bytes]]


def _save(fig: Any, path: Target, dpi: int | None = None) -> Any:
    """Save and close a figure; a str/Path gets its folder created and is returned as a Path."""
    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path


def convergence_plot(path: Target, curves: Mapping[str, Sequence[dict[str, Any]]], *,
                     title: str = "", x: str = "evaluations", y: str = "loss", logy: bool = True,
                     best: bool = False) -> Any:
    """One line per run: ``y`` (loss) against ``x`` (renders spent); ``best`` adds the running minimum."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    positive = True
    for label, history in curves.items():
        pts = [(h[x], h[y]) for h in history if h.get(y) is not None and h.get(x) is not None
               and math.isfinite(h[y])]
        if pts:
            xs, ys = zip(*pts)
            line, = ax.plot(xs, ys, label=label, lw=1.5)
            positive = positive and min(ys) > 0
            if best:
                run_min = [min(ys[:i + 1]) for i in range(len(ys))]
                ax.plot(xs, run_min, ls="--", lw=1.0, color=line.get_color(), label=f"{label} (best so far)")
    if logy and positive:
        ax.set_yscale("log")
    ax.set_xlabel("renders" if x == "evaluations" else x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0] and (len(curves) > 1 or title):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def image_grid(path: Target, rows: Sequence[Sequence[Any]], *, row_labels: Sequence[str] = (),
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
    return _save(fig, path, dpi=110)


def band_plot(path: Target, grid: Sequence[float], curves: Mapping[str, Sequence[Sequence[float]]], *,
              title: str = "", xlabel: str = "renders", ylabel: str = "parameter error",
              hline: float | None = None, hline_label: str = "", dashed: Sequence[str] = ()) -> Any:
    """Median over seeds and the interquartile band, one line per method, on a shared x grid.

    ``curves[method]`` holds one sequence of y values per seed, each sampled at ``grid``.
    """
    import numpy as np
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for method, runs in curves.items():
        ys = np.asarray(runs, dtype=float)
        line, = ax.plot(grid, np.median(ys, axis=0), "--" if method in dashed else "-", lw=1.5, label=method)
        if len(ys) > 1:
            ax.fill_between(grid, np.quantile(ys, 0.25, axis=0), np.quantile(ys, 0.75, axis=0),
                            color=line.get_color(), alpha=0.15, lw=0)
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8, ls=":", label=hline_label or None)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def comparison_figure(path: Target, images: Sequence[tuple[str, Any]], curves: Mapping[str, Sequence[dict[str, Any]]],
                      *, xy: tuple[str, str] = ("x", "y"), start: Mapping[str, float] | None = None,
                      target: Mapping[str, float] | None = None, solved: float | None = None,
                      title: str = "") -> Any:
    """Labelled images in a row over two panels: each run's path through two parameters, and its
    distance to the target parameters against renders (the demo's picture)."""
    cols = max(2, len(images))
    fig = plt.figure(figsize=(max(8.0, 1.7 * cols), 6.2), dpi=110)
    grid = fig.add_gridspec(2, cols, height_ratios=[1, 1.6])
    for j, (label, img) in enumerate(images):
        ax = fig.add_subplot(grid[0, j])
        if img is not None:
            ax.imshow(to_display(img), interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    px, py = xy
    half = cols // 2
    ax = fig.add_subplot(grid[1, :half])
    for name, hist in curves.items():
        ax.plot([h["params"][px] for h in hist], [h["params"][py] for h in hist], lw=1.2, label=name)
    if start is not None:
        ax.plot([start[px]], [start[py]], "ko", ms=5, label="start")
    if target is not None:
        ax.plot([target[px]], [target[py]], "r*", ms=12, label="target")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # image convention: y down
    ax.set_aspect("equal")
    ax.set_title(f"path in parameter space ({px}, {py})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    if target is not None:
        ax = fig.add_subplot(grid[1, half:])
        for name, hist in curves.items():
            err = [math.dist([h["params"][px], h["params"][py]], [target[px], target[py]]) for h in hist]
            ax.plot([h["evaluations"] for h in hist], err, lw=1.2, label=name)
        if solved is not None:
            ax.axhline(solved, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("renders")
        ax.set_title("distance to the target parameters" + (" (dotted: solved)" if solved is not None else ""),
                     fontsize=9)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
