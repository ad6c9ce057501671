"""Checkpoints: the complete state of a run, written atomically.

Loaded with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
only, so a checkpoint file can never execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FILENAME = "checkpoint.pt"


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write never leaves a half checkpoint
    return path


def load_checkpoint(directory: str | Path, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    path = Path(directory) / FILENAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; was the run started with a checkpoint directory?")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if fingerprint is not None:
        saved = state.get("fingerprint", {})
        diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {path} belongs to a different run ({what})")
    return state
