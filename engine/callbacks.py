"""Callbacks observe a run: progress bar, periodic image snapshots, anything a user adds.

A callback implements any of ``on_start``, ``on_step``, ``on_end``; the loop passes keyword
arguments so new ones can be added without breaking existing callbacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


class Callback:
    def on_start(self, **kw: Any) -> None:
        pass

    def on_step(self, *, record: dict[str, Any], **kw: Any) -> None:
        pass

    def on_end(self, *, result: Any, **kw: Any) -> None:
        pass


class ProgressBar(Callback):
    """A tqdm bar showing the loss and the renders spent so far."""

    def __init__(self, total: int, initial: int = 0, desc: str = "optimizing"):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def on_step(self, *, record: dict[str, Any], **kw: Any) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4g}", renders=record["evaluations"], refresh=False)

    def on_end(self, **kw: Any) -> None:
        self.bar.close()


class Snapshots(Callback):
    """Save the current image every ``every`` steps as ``DIR/step_00042.png``.

    Snapshot renders are counted as extra renders, apart from the optimization's.
    """

    def __init__(self, directory: str | Path, every: int, sheet_columns: int = 8):
        self.dir = Path(directory)
        self.every = every
        self.sheet_columns = sheet_columns
        self.frames: list[tuple[int, torch.Tensor]] = []

    def on_step(self, *, record: dict[str, Any], u: torch.Tensor | None = None, evaluator: Any = None,
                **kw: Any) -> None:
        if not self.every or (record["step"] + 1) % self.every or u is None or evaluator is None:
            return
        from .imageio import save_png
        img = evaluator.preview(evaluator.space.to_theta(u.unsqueeze(0)))[0]
        self.dir.mkdir(parents=True, exist_ok=True)
        save_png(self.dir / f"step_{record['step'] + 1:05d}.png", img)
        self.frames.append((record["step"] + 1, img.detach().cpu()))

    def on_end(self, **kw: Any) -> None:
        """A contact sheet of the snapshots: the run at a glance."""
        if not self.frames:
            return
        from .plotting import image_grid
        frames = self.frames
        if len(frames) > 4 * self.sheet_columns:  # keep the sheet readable: an even subsample
            idx = torch.linspace(0, len(frames) - 1, 4 * self.sheet_columns).round().long().unique()
            frames = [frames[int(i)] for i in idx]
        cols = self.sheet_columns
        rows = [frames[i:i + cols] for i in range(0, len(frames), cols)]
        image_grid(self.dir / "sheet.png", [[img for _, img in r] for r in rows],
                   cell_labels=[[f"step {s}" for s, _ in r] for r in rows], title="snapshots")


class History(Callback):
    """Collects records in memory (the loop keeps its own; this is for user code)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_step(self, *, record: dict[str, Any], **kw: Any) -> None:
        self.records.append(record)
