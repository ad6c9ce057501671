"""The ``mitsuba`` renderer: a Mitsuba 3 scene whose declared parameters rendergrad optimizes.

Two modes over one scene and one set of parameter bindings:

* ``mode = "forward"`` (default): forward renders only, for the black-box estimators (``prdpt``,
  ``zerograds``, ``spsa``...). A batch of B parameter vectors is rendered one after the other
  into the loaded scene (no reloading, kernels are compiled once and reused), each with its own
  seed by default so Monte Carlo noise averages out across renders.
* ``mode = "differentiable"``: ``render`` is autograd-differentiable; the image comes from
  ``mi.render`` wrapped with ``dr.wrap`` so torch gradients flow back through Mitsuba's adjoint
  pass. The integrator decides how discontinuities are handled: ``prb_projective`` (default)
  and ``direct_projective`` sample silhouette edges, ``prb`` ignores them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rendergrad import Renderer
from rendergrad.errors import ConfigError
from rendergrad.resolution import parse_resolution
from rendergrad.seeds import parse_seed_mode
from rendergrad.params import ParamSpace

from .backend import activate, availability, choose_variant, import_mitsuba
from .bindings import SceneBindings
from .scene import load_scene, scene_dict_or_file

PROJECTIVE = ("prb_projective", "direct_projective")
DIFF_INTEGRATORS = ("prb_projective", "direct_projective", "prb", "prb_basic", "direct_reparam", "prb_reparam")


def _resolution(value: Any) -> tuple[int, int] | None:
    return None if value is None else parse_resolution(value, "mitsuba renderer")


class MitsubaRenderer(Renderer):
    """Mitsuba 3 scenes (XML, dict or builder); forward-only or differentiable (dr.wrap) renders."""

    name = "mitsuba"
    differentiable = False               # mode = "forward", the default
    differentiable_when = {"mode": "differentiable"}
    noisy = True                         # seed_mode = "per_render", the default (an instance with "fixed" is not)
    adjustable_samples = True            # set_sample_fraction scales spp (and spp_grad)

    def __init__(self, scene: Any, params: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]],
                 *, scene_args: Mapping[str, Any] | None = None, mode: str = "forward",
                 variant: str | None = None, resolution: int | Sequence[int] | Mapping[str, int] | None = None, spp: int = 16,
                 spp_grad: int | None = None, integrator: str | Mapping[str, Any] | None = None,
                 max_depth: int | None = None, seed: int = 0, seed_mode: str = "per_render",
                 sensor: int = 0, xml_defaults: Mapping[str, Any] | None = None):
        if mode not in ("forward", "differentiable"):
            raise ConfigError(f"mitsuba renderer: mode must be 'forward' or 'differentiable', got {mode!r}")
        seed_mode = parse_seed_mode(seed_mode, "mitsuba renderer")
        if not (isinstance(spp, int) and spp >= 1) or (spp_grad is not None and not spp_grad >= 1):
            raise ConfigError("mitsuba renderer: spp (and spp_grad) must be integers >= 1")
        if max_depth is not None and not (isinstance(max_depth, int) and (max_depth >= 1 or max_depth == -1)):
            raise ConfigError("mitsuba renderer: max_depth must be >= 1 (or -1 for unbounded)")
        self.variant = choose_variant(variant)
        if mode == "differentiable" and "_ad_" not in self.variant:
            raise ConfigError(f"mitsuba renderer: mode='differentiable' needs an AD variant (llvm_ad_rgb, "
                              f"cuda_ad_rgb); {self.variant!r} renders forward only")
        self.mode = mode
        self.differentiable = mode == "differentiable"
        self.spp, self.spp_grad = int(spp), (int(spp_grad) if spp_grad is not None else None)
        self.seed, self.seed_mode = int(seed), seed_mode
        self.noisy = seed_mode != "fixed"  # a fixed seed renders the same image every time
        self._fraction = 1.0
        self.min_sample_fraction = 1.0 / self.spp  # one sample per pixel
        self.sensor_index = int(sensor)
        self._counter = 0
        mi = activate(self.variant)
        _, dr = import_mitsuba()
        self.mi, self.dr = mi, dr
        res = _resolution(resolution)
        source = scene_dict_or_file(scene, scene_args)
        if isinstance(source, Mapping) and self.differentiable:
            source = _sample_border(source)
        self.scene = load_scene(mi, source, resolution=res, xml_defaults=xml_defaults)
        if not 0 <= self.sensor_index < len(self.scene.sensors()):
            raise ConfigError(f"mitsuba renderer: sensor {sensor} does not exist; the scene has "
                              f"{len(self.scene.sensors())} sensor(s)")
        self.params = mi.traverse(self.scene)
        if res is not None:
            self._set_resolution(res)
        self.integrator = self._make_integrator(integrator, max_depth)
        self.bindings = SceneBindings(mi, dr, self.scene, self.params, params)
        self.space: ParamSpace = self.bindings.space
        self._wrapped = None

    # -- setup helpers ---------------------------------------------------------------------------
    def _set_resolution(self, res: tuple[int, int]) -> None:
        film = self.scene.sensors()[self.sensor_index].film()
        size = tuple(int(v) for v in film.size())
        if size == (res[1], res[0]):
            return
        keys = [k for k in self.params.keys() if k.endswith("film.size")]
        if not keys:
            raise ConfigError("mitsuba renderer: cannot change this scene's film size; set it in the scene file")
        for k in keys:
            self.params[k] = self.mi.ScalarVector2u(res[1], res[0])
        self.params.update()

    def _make_integrator(self, integrator: str | Mapping[str, Any] | None, max_depth: int | None) -> Any:
        mi = self.mi
        if integrator is None:
            if self.differentiable:
                integrator = "prb_projective"
            elif max_depth is None and self.scene.integrator() is not None:
                return self.scene.integrator()
            else:
                integrator = "path"
        if isinstance(integrator, str):
            spec: dict[str, Any] = {"type": integrator}
            if integrator in PROJECTIVE:
                # Path guiding for silhouette sampling rebuilds an octree every render: ~30x the
                # cost of a step at small resolutions on the CPU. A table spec keeps full control.
                spec["guiding"] = "none"
        else:
            spec = dict(integrator)
        if "type" not in spec:
            raise ConfigError("mitsuba renderer: an integrator table needs a `type`, e.g. { type = \"path\" }")
        if max_depth is not None:
            spec.setdefault("max_depth", int(max_depth))
        if self.differentiable and spec["type"] not in DIFF_INTEGRATORS:
            raise ConfigError(f"mitsuba renderer: integrator {spec['type']!r} has no adjoint pass; in "
                              f"differentiable mode use one of {', '.join(DIFF_INTEGRATORS)}")
        try:
            return mi.load_dict(spec)
        except Exception as e:
            raise ConfigError(f"mitsuba renderer: cannot create integrator {spec}: {e}") from None

    # -- the Renderer interface -----------------------------------------------------------------
    @classmethod
    def available(cls) -> tuple[bool, str]:
        return availability()

    def parameter_space(self) -> ParamSpace:
        return self.space

    def light_parameters(self) -> list[str]:
        return self.bindings.light_parameters()

    def nondifferentiable_parameters(self) -> list[str]:
        """Declared parameters Mitsuba does not differentiate: analytic gradients are zero there."""
        return self.bindings.nondifferentiable()

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self._counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._counter = int(state.get("counter", 0))

    def seek(self, index: int, batch: int) -> None:
        """Seeds follow each image's place in the run, so any worker renders the same image."""
        self._counter = int(batch) if self.seed_mode == "per_batch" else int(index)

    def set_sample_fraction(self, fraction: float) -> None:
        """The next renders use ``fraction`` of ``spp`` (at least one sample per pixel)."""
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"mitsuba renderer: a sample fraction must lie in (0, 1], got {fraction!r}")
        self._fraction = float(fraction)

    def _samples(self, spp: int | None) -> int | None:
        return None if spp is None else max(1, int(round(spp * self._fraction)))

    def close(self) -> None:
        self._wrapped = None
        self.scene = None
        self.params = None

    def _seeds(self, b: int) -> list[int]:
        if self.seed_mode == "fixed":
            return [self.seed & 0xFFFFFFFF] * b
        base = (self.seed * 0x9E3779B1) & 0xFFFFFFFF
        if self.seed_mode == "per_batch":
            s = (base + self._counter) & 0xFFFFFFFF
            self._counter += 1
            return [s] * b
        out = [(base + self._counter + i) & 0xFFFFFFFF for i in range(b)]
        self._counter += b
        return out

    def render(self, theta: torch.Tensor) -> torch.Tensor:
        if self.scene is None:
            raise ConfigError("mitsuba renderer: render() after close()")
        theta = torch.as_tensor(theta)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if theta.shape[-1] != self.space.size:
            raise ConfigError(f"mitsuba renderer: theta has {theta.shape[-1]} columns, the scene declares "
                              f"{self.space.size} parameter values")
        activate(self.variant)
        seeds = self._seeds(theta.shape[0])
        track = self.differentiable and torch.is_grad_enabled() and theta.requires_grad
        out = []
        for row, seed in zip(theta, seeds):
            if track:
                img = self._render_grad(row, seed)
            else:
                img = self._render_forward(row.detach(), seed)
            out.append(img[..., :3])
        return torch.stack(out)

    def _render_forward(self, row: torch.Tensor, seed: int) -> torch.Tensor:
        mi = self.mi
        values = row.to(torch.float64).cpu().numpy()
        self.bindings.apply(mi.Float(values.astype(np.float32)), values)
        self.params.update()
        img = mi.render(self.scene, spp=self._samples(self.spp), seed=seed, integrator=self.integrator,
                        sensor=self.sensor_index)
        return torch.from_numpy(np.array(img, dtype=np.float32))

    def _render_grad(self, row: torch.Tensor, seed: int) -> torch.Tensor:
        if self._wrapped is None:
            dr, mi = self.dr, self.mi

            @dr.wrap(source="torch", target="drjit")
            def render_dr(x, values, seed):
                self.bindings.apply(x.array, values)
                self.params.update()
                kw = {"spp_grad": self._samples(self.spp_grad)} if self.spp_grad is not None else {}
                return mi.render(self.scene, self.params, spp=self._samples(self.spp), seed=seed, integrator=self.integrator,
                                 sensor=self.sensor_index, **kw)

            self._wrapped = render_dr
        values = row.detach().to(torch.float64).cpu().numpy()
        img = self._wrapped(row.to(torch.float32).contiguous(), values, seed)
        return img.to(torch.float32)


def _sample_border(d: Mapping[str, Any]) -> dict[str, Any]:
    """Projective integrators need the film to sample beyond its border to see objects entering it."""
    out = dict(d)
    for k, v in d.items():
        if isinstance(v, Mapping) and isinstance(v.get("film"), Mapping):
            film = dict(v["film"])
            film.setdefault("sample_border", True)
            out[k] = dict(v, film=film)
    return out
