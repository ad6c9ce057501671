"""Renderers for the executor tests: importable by name in worker processes and Ray actors.

``NoisyDisc`` is the toy renderer plus per-image noise seeded from each image's place in the
run (``seek``), the contract every noisy renderer keeps to be executor-safe. ``NoisyGain`` is a
flat grey image whose Monte Carlo-like noise grows with its brightness and with fewer samples: it
declares ``noisy`` and ``adjustable_samples``, so the MSE objective scores it in noise pairs. Options make it
misbehave on purpose: sleep per image, exit the process every N renders, raise in the
constructor, hang on a given render index, record its process id.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from rendergrad import Renderer, hookimpl
from rendergrad.params import Param, ParamSpace
from rendergrad.renderers.toy import ToyRenderer


class NoisyDisc(ToyRenderer):
    """Toy disc with seeded noise per image; misbehaves on request."""

    name = "noisy_disc"

    def __init__(self, resolution: int = 12, noise: float = 0.05, seed: int = 0, sleep: float = 0.0,
                 exit_every: int = 0, fail_init: bool = False, hang_at: int = -1, hang_once_dir: str = "",
                 pid_dir: str = "", raise_at: int = -1):
        if fail_init:
            raise ValueError("noisy_disc: fail_init=True (a constructor that fails on purpose)")
        super().__init__(resolution=resolution, mode="hard")
        self.noise, self.seed, self.sleep = float(noise), int(seed), float(sleep)
        self.exit_every, self.hang_at, self.raise_at = int(exit_every), int(hang_at), int(raise_at)
        self.hang_once_dir = hang_once_dir
        self.index, self.done = 0, 0
        if pid_dir:
            Path(pid_dir, str(os.getpid())).touch()

    def seek(self, index: int, batch: int) -> None:
        self.index = int(index)

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        clean = super().render(theta)
        out = []
        for row in range(clean.shape[0]):
            i = self.index + row
            self.done += 1
            if self.exit_every and self.done % self.exit_every == 0:
                os._exit(3)
            if i == self.raise_at:
                raise RuntimeError(f"render {i} fails on purpose")
            if i == self.hang_at:
                marker = Path(self.hang_once_dir, f"hung-{i}")
                if not marker.exists():
                    marker.touch()
                    time.sleep(3600)
            if self.sleep:
                time.sleep(self.sleep)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            out.append(clean[row] + self.noise * torch.randn(clean[row].shape, generator=g, dtype=clean.dtype))
        self.index += clean.shape[0]
        return torch.stack(out)


class NoisyGain(Renderer):
    """A flat image of brightness ``level`` whose noise is ``noise · level / √(sample fraction)``.

    Brighter is noisier, as with a path tracer, so the plain MSE against a target of level ``t``
    has its minimum at ``t / (1 + noise²)``, not at ``t``; the pair loss at ``t``.
    """

    name = "noisy_gain"
    differentiable = True
    adjustable_samples = True

    def __init__(self, noise: float = 1.0, seed: int = 0, size: int = 8, samples: bool = True):
        self.noise, self.seed, self.size = float(noise), int(seed), int(size)
        self.noisy = True
        self.adjustable_samples = bool(samples)
        self.index, self.fraction, self.fractions = 0, 1.0, []
        self.space = ParamSpace([Param("level", 0.0, 1.0, init=0.9)])

    def parameter_space(self) -> ParamSpace:
        return self.space

    def seek(self, index: int, batch: int) -> None:
        self.index = int(index)

    def set_sample_fraction(self, fraction: float) -> None:
        self.fraction = float(fraction)

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        out = []
        for row in theta.to(torch.float32):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.index)
            eps = torch.randn((self.size, self.size, 3), generator=g)
            out.append(row[0] * (1 + self.noise * eps / self.fraction ** 0.5))
            self.fractions.append(self.fraction)
            self.index += 1
        return torch.stack(out)


def pids_alive(pid_dir: str) -> list[int]:
    """Recorded worker pids that still run (zombies count as gone)."""
    alive = []
    for p in Path(pid_dir).iterdir():
        if not p.name.isdigit():
            continue
        pid = int(p.name)
        if pid == os.getpid():
            continue  # the optimizer's own renderer
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def wait_gone(pid_dir: str, seconds: float = 30.0) -> list[int]:
    """Worker pids still alive after up to ``seconds`` (returns as soon as none is: on a loaded
    machine a killed Ray actor's process takes more than 10 s to be reaped)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = pids_alive(pid_dir)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@hookimpl
def rendergrad_renderers():
    return [NoisyDisc, NoisyGain]
