"""The rasterizer seam: the only place that calls nvdiffrast.

Everything before it (scene, parameter binding, transforms, clip-space vertices) and after it
(shading, compositing) is plain torch. The renderer talks to an object with four methods —
:meth:`rasterize`, :meth:`interpolate`, :meth:`texture`, :meth:`antialias` — whose signatures
and conventions are nvdiffrast's own (``rast[..., 3]`` is triangle id + 1, 0 for background;
row 0 is the bottom of the image). :class:`NvdiffrastOps` is that object for the real library.

nvdiffrast is CUDA-only and distributed two ways, both imported as ``nvdiffrast.torch``:

* ``pip install diffrp-nvdiffrast`` — an unofficial repackage on PyPI (0.3.3.1), a pure-Python
  wheel carrying the CUDA sources, compiled by torch's extension builder on first use (needs
  ``nvcc`` and ``ninja``; the build lands in torch's extension cache, ``~/.cache/torch_extensions``);
* upstream, ``pip install --no-build-isolation git+https://github.com/NVlabs/nvdiffrast``.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import torch

from rendergrad.errors import PluginUnavailableError

INSTALL = ("pip install 'rendergrad[nvdiffrast]' (the PyPI repackage diffrp-nvdiffrast, compiled on first "
           "use: needs nvcc and ninja) or upstream: pip install --no-build-isolation "
           "git+https://github.com/NVlabs/nvdiffrast")
DISTRIBUTIONS = ("diffrp-nvdiffrast", "nvdiffrast")


class RasterOps(Protocol):
    """What the renderer needs from a rasterizer (nvdiffrast's ``dr.*`` signatures)."""

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
                  grad_db: bool) -> tuple[torch.Tensor, torch.Tensor]: ...

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                    rast_db: torch.Tensor | None = None, diff_attrs: Any = None
                    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def texture(self, tex: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor | None,
                max_mip_level: int | None) -> torch.Tensor: ...

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                  tri: torch.Tensor) -> torch.Tensor: ...


def distribution() -> tuple[str, str] | None:
    """``(distribution name, version)`` of the installed nvdiffrast, or None."""
    for name in DISTRIBUTIONS:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    if importlib.util.find_spec("nvdiffrast") is not None:  # e.g. a source checkout on PYTHONPATH
        return "nvdiffrast", "unknown"
    return None


def availability() -> tuple[bool, str]:
    """Cheap check for ``rendergrad plugins``: package present and a CUDA device visible (no compile)."""
    if distribution() is None:
        return False, f"nvdiffrast is not installed: {INSTALL}"
    if not torch.cuda.is_available():
        return False, ("nvdiffrast runs on NVIDIA GPUs only and torch sees no CUDA device here "
                       f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})")
    return True, ""


def import_nvdiffrast() -> Any:
    ok, why = availability()
    if not ok:
        raise PluginUnavailableError(f"nvdiffrast renderer: {why}")
    try:
        import nvdiffrast.torch as dr
    except Exception as e:  # pragma: no cover - needs the package
        raise PluginUnavailableError(f"nvdiffrast renderer: cannot import nvdiffrast.torch: {e}. {INSTALL}") from None
    return dr


class NvdiffrastOps:
    """The real rasterizer: nvdiffrast's CUDA context and ops.

    The first call builds nvdiffrast's CUDA extension when the package ships sources
    (diffrp-nvdiffrast): tens of seconds, once per machine, cached by torch.
    """

    def __init__(self, device: torch.device | str = "cuda"):
        dr = import_nvdiffrast()
        self.dr = dr
        self._topology: tuple[Any, Any] = (None, None)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise PluginUnavailableError(f"nvdiffrast renderer: device must be a CUDA device, got {device!r}")
        try:
            self.ctx = dr.RasterizeCudaContext(device=self.device)
        except Exception as e:  # pragma: no cover - needs a GPU
            raise PluginUnavailableError(
                f"nvdiffrast renderer: cannot create nvdiffrast's CUDA context (building its extension needs "
                f"nvcc and ninja on PATH): {type(e).__name__}: {e}") from None

    def rasterize(self, pos, tri, resolution, grad_db):  # pragma: no cover - needs a GPU
        return self.dr.rasterize(self.ctx, pos.contiguous(), tri, resolution=list(resolution), grad_db=grad_db)

    def interpolate(self, attr, rast, tri, rast_db=None, diff_attrs=None):  # pragma: no cover - needs a GPU
        return self.dr.interpolate(attr.contiguous(), rast, tri, rast_db=rast_db, diff_attrs=diff_attrs)

    def texture(self, tex, uv, uv_da, max_mip_level):  # pragma: no cover - needs a GPU
        mode = "linear-mipmap-linear" if uv_da is not None else "linear"
        return self.dr.texture(tex.contiguous(), uv.contiguous(), uv_da=uv_da, filter_mode=mode,
                               boundary_mode="wrap", max_mip_level=max_mip_level)

    def antialias(self, color, rast, pos, tri):  # pragma: no cover - needs a GPU
        # The topology hash depends only on the triangles, which a renderer keeps for its lifetime.
        if self._topology[0] is not tri:
            self._topology = (tri, self.dr.antialias_construct_topology_hash(tri))
        return self.dr.antialias(color.contiguous(), rast, pos.contiguous(), tri, topology_hash=self._topology[1])
