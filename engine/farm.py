"""Runs whose images come from outside: ``rendergrad run --external``, ``ask`` and ``tell``.

A render farm cannot be called synchronously: a job is submitted and its images come back
minutes or hours later. The run folder holds the whole state between commands::

    rendergrad run job.toml --out RUN --external        # set up; renders nothing but the target
    rendergrad ask RUN                                  # writes RUN/batches/<id>.json, prints its path
    rendergrad tell RUN --batch RUN/batches/<id>.json --images DIR   # one EXR/PNG/NPY per candidate
    ...                                                 # until `ask` says the run has finished

Each command loads the saved :class:`~rendergrad.optimization.Optimization`, does one thing and
saves it again (atomically), so the commands may run in different processes, days apart. Use
EXR or NPY for exact results (PNG is 8-bit sRGB). Run one command at a time per folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .imageio import load_image
from .optimization import Optimization
from .result import Result

IMAGE_SUFFIXES = (".exr", ".npy", ".png", ".jpg", ".jpeg")


def state_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoint"


def load_run(run_dir: str | Path) -> Optimization:
    """The saved optimization of an external run folder."""
    path = state_dir(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise ConfigError(f"{run_dir} is not an external run folder (no {path}); "
                          "create one with `rendergrad run FILE --out DIR --external`")
    return Optimization.load(state_dir(run_dir))


def ask(run_dir: str | Path) -> Path | None:
    """Write the pending batch as JSON into ``run_dir/batches`` and return its path (None: finished)."""
    opt = load_run(run_dir)
    batch = opt.ask()
    if batch is None:
        finish(run_dir, opt)
        return None
    path = Path(run_dir) / "batches" / f"{batch.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(batch.to_json(), indent=1))
    return path


def read_images(directory: str | Path, count: int) -> list[Any]:
    """One image per candidate from ``directory``, in file-name order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"--images {directory}: not a folder")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) != count:
        raise ConfigError(f"--images {directory}: the batch has {count} candidates but the folder holds "
                          f"{len(files)} images ({', '.join(IMAGE_SUFFIXES)}); give one per candidate, "
                          "named so that they sort in candidate order (0000.exr, 0001.exr, ...)")
    # NPY keeps its dtype (a float64 renderer's images stay exact); the rest load as linear float32.
    return [torch.from_numpy(np.load(p, allow_pickle=False)) if p.suffix.lower() == ".npy" else load_image(p)
            for p in files]


def read_losses(path: str | Path) -> list[float]:
    """Loss values from a JSON list or a text file with one number per line."""
    text = Path(path).read_text()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [float(x) for x in text.split()]
        return [float(v) for v in values]
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--losses {path}: expected a JSON list or one number per line ({e})") from None


def tell(run_dir: str | Path, batch_file: str | Path, *, images: str | Path | None = None,
         losses: str | Path | None = None) -> Result | None:
    """Answer a batch written by :func:`ask`; returns the result once the run has finished."""
    try:
        batch = json.loads(Path(batch_file).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--batch {batch_file}: cannot read the batch JSON ({e})") from None
    opt = load_run(run_dir)
    if images is not None:
        frames = read_images(images, int(batch.get("size", 0)))
        if len({tuple(f.shape) for f in frames}) > 1:
            raise ConfigError(f"--images {images}: the images differ in size "
                              f"({sorted({tuple(f.shape) for f in frames})}); render every candidate alike")
        opt.tell(batch, torch.stack(frames))
    else:
        opt.tell(batch, losses=read_losses(losses))
    opt.save(state_dir(run_dir))
    if opt.done:
        return finish(run_dir, opt)
    return None


def finish(run_dir: str | Path, opt: Optimization) -> Result:
    from .runner import write_outputs
    result = opt.result()
    write_outputs(Path(run_dir), result)
    return result
