"""A family of tasks from a run file: the same scene, many targets.

``[target] ranges = {x = [0.2, 0.8]}`` draws each task's target parameters uniformly from the
ranges (every element of a vector parameter independently; ``[target] params`` fixes the
others) and renders the target images; the task's optimum is then known, so parameter errors
can be reported. ``[target] images = "refs/*.png"`` (a glob, or a folder) makes one task per
image. Tasks are split into training and held-out test tasks with the family's seed.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError
from ..evaluation import BatchEvaluator
from ..imageio import load_image
from .learner import Task

IMAGE_SUFFIXES = (".png", ".exr", ".npy", ".jpg", ".jpeg")


def image_paths(spec: str) -> list[Path]:
    """The files a folder or glob names, sorted (the order does not depend on the file system)."""
    p = Path(spec)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        files = [Path(f) for f in glob.glob(spec) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ConfigError(f"[target] images = {spec!r} matches no image files ({', '.join(IMAGE_SUFFIXES)}); "
                          "give a folder or a glob such as \"refs/*.png\"")
    return sorted(files)


def _uniform(ranges: Mapping[str, Any], space, gen: torch.Generator) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, rng in ranges.items():
        if name not in space:
            raise ConfigError(f"[target] ranges: unknown parameter {name!r}; valid names: {', '.join(space.names)}")
        if not (isinstance(rng, (list, tuple)) and len(rng) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) and rng[0] <= rng[1]):
            raise ConfigError(f"[target] ranges: {name} = {rng!r} must be [low, high] with low <= high, "
                              f"e.g. {name} = [0.2, 0.8]")
        p = space[name]
        x = torch.rand(p.size, generator=gen, dtype=torch.float64) * (rng[1] - rng[0]) + rng[0]
        values[name] = x.reshape(p.shape).tolist() if p.shape else float(x[0])
    return values


def build_family(target_cfg: Mapping[str, Any], meta_cfg: Mapping[str, Any],
                 evaluator: BatchEvaluator) -> tuple[list[Task], list[Task]]:
    """``(train, test)`` tasks. Target renders count as the evaluator's extra renders."""
    space = evaluator.space
    gen = torch.Generator().manual_seed(int(meta_cfg["seed"]))
    n_test = int(meta_cfg["test_tasks"])
    if n_test < 0:
        raise ConfigError("[meta] test_tasks must be >= 0")
    if "ranges" in target_cfg:
        n_train = int(meta_cfg["tasks"])
        if n_train < 1:
            raise ConfigError("[meta] tasks must be >= 1")
        fixed = dict(target_cfg.get("params", {}))
        tasks = []
        for i in range(n_train + n_test):
            values = {**fixed, **_uniform(target_cfg["ranges"], space, gen)}
            theta = space.flatten(values, what=f"target of task {i}")
            image = evaluator.preview(theta.unsqueeze(0))[0].detach()
            tasks.append(Task(target=image, u_star=space.to_unit(theta), name=f"task{i:04d}"))
        return tasks[:n_train], tasks[n_train:]
    if "images" in target_cfg:
        files = image_paths(str(target_cfg["images"]))
        if len(files) <= n_test:
            raise ConfigError(f"[target] images: {len(files)} images but [meta] test_tasks = {n_test}; "
                              "hold out fewer or add images")
        order = torch.randperm(len(files), generator=gen).tolist()
        tasks = [Task(target=load_image(files[i]), name=files[i].name) for i in order]
        return tasks[:len(files) - n_test], tasks[len(files) - n_test:]
    raise ConfigError("a family run file needs [target] ranges = {name = [low, high]} or "
                      "[target] images = \"folder or glob\"; a single target is a plain `rendergrad run`")
