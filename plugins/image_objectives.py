"""Perceptual and lighting-by-example objectives: ``ssim``, ``histogram``, ``gradient-histogram``, ``style``.

Every one of them is differentiable and batched, so it drives analytic gradients (the
``olat`` renderer, a soft toy scene, Mitsuba AD) as well as black-box estimators. They score
*display* images: each takes ``tonemap`` (``srgb``, ``agx``, ``linear``, ``none``) and
``exposure`` options and applies them to both the renders and the target, because a metric
computed on linear radiance is dominated by the few brightest pixels.

* ``ssim``: 1 − mean SSIM (Wang et al. 2004), Gaussian window, per channel.
* ``histogram``: luminance-histogram matching (Hudon et al. 2016) with soft (Gaussian) bins,
  so the histogram has a gradient; compared as the 1-D earth mover's distance (L1 of CDFs),
  which still pulls when the histograms do not overlap.
* ``gradient-histogram``: histograms of gradient orientation (magnitude-weighted, soft von Mises
  bins, no ``atan2`` singularity) and of gradient magnitude (Galvane et al. 2018); captures the
  light's direction, which a luminance histogram cannot see.
* ``style``: Gatys et al. Gram-matrix loss over a pluggable feature extractor: ``pyramid``
  (colour and edge channels over a Gaussian pyramid, no weights), ``random`` (a fixed, seeded
  random conv net; random features are known to carry texture statistics), or any importable
  ``"package.module:factory"`` returning a module ``[B,3,H,W] -> list of [B,C,h,w]`` (e.g. a VGG
  with weights you have locally). From Python, pass the callable itself.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from rendergrad import Objective, hookimpl
from rendergrad.errors import ConfigError

from .objectives import check_target
from .tonemap import check_tonemap, tonemap as apply_tonemap

LUMA = (0.2126, 0.7152, 0.0722)


class DisplayObjective(Objective):
    """Base for objectives that score tone-mapped images (``tonemap``, ``exposure`` options)."""

    default_tonemap = "srgb"

    def __init__(self, tonemap: str | None = None, exposure: float = 0.0):
        self.tonemap = check_tonemap(self.default_tonemap if tonemap is None else tonemap)
        self.exposure = float(exposure)
        self._target_key: tuple | None = None
        self._target_cache: Any = None

    def prepare(self, target: torch.Tensor | None) -> None:
        self._target_key, self._target_cache = None, None

    def display(self, images: torch.Tensor) -> torch.Tensor:
        """Linear ``[B,H,W,C]`` → tone-mapped ``[B,C,H,W]`` (RGB; alpha dropped, grey repeated)."""
        if images.ndim != 4:
            raise ConfigError(f"objective {self.name!r} expects images [B, H, W, C], got {tuple(images.shape)}")
        c = images.shape[-1]
        if c == 1:
            images = images.expand(*images.shape[:-1], 3)
        elif c == 4:
            images = images[..., :3]
        elif c != 3:
            raise ConfigError(f"objective {self.name!r} needs 1, 3 or 4 channels, got {c}")
        return apply_tonemap(images, self.tonemap, self.exposure).permute(0, 3, 1, 2)

    def target_features(self, target: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> Any:
        """Compute (and cache) features of the target: it is constant during a run."""
        key = (target.data_ptr(), tuple(target.shape), target.device, target._version)
        if self._target_key != key:
            with torch.no_grad():
                self._target_cache = fn(self.display(target.unsqueeze(0).to(torch.float32)))
            self._target_key = key
        return self._target_cache


# -- SSIM ---------------------------------------------------------------------------------------
def gaussian_window(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image of ``x`` ``[B,C,H,W]`` against ``y`` ``[1 or B,C,H,W]`` → ``[B]``."""
    b, c, h, w = x.shape
    win = min(window, h, w)
    if win % 2 == 0:
        win -= 1
    sig = sigma * win / window
    g = gaussian_window(win, sig, x.device, x.dtype)
    kx = g.view(1, 1, 1, win).expand(c, 1, 1, win)
    ky = g.view(1, 1, win, 1).expand(c, 1, win, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    y = y.to(x.dtype).expand(b, -1, -1, -1)
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


class SSIM(DisplayObjective):
    """1 − mean SSIM against the reference, on tone-mapped images (Gaussian 11×11 window)."""

    name = "ssim"

    def __init__(self, tonemap: str | None = None, exposure: float = 0.0, window: int = 11, sigma: float = 1.5):
        super().__init__(tonemap, exposure)
        if window < 1 or sigma <= 0:
            raise ConfigError("ssim: window must be >= 1 and sigma > 0")
        self.window, self.sigma = int(window), float(sigma)

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        ty = self.target_features(t, lambda d: d)
        return 1.0 - ssim(self.display(images), ty, self.window, self.sigma)


# -- histograms ---------------------------------------------------------------------------------
def soft_histogram(values: torch.Tensor, bins: int, low: float = 0.0, high: float = 1.0,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian-binned histogram of ``values`` ``[B, N]`` → ``[B, bins]``, each row summing to 1."""
    width = (high - low) / bins
    centers = low + width * (torch.arange(bins, device=values.device, dtype=values.dtype) + 0.5)
    d = (values.unsqueeze(-1) - centers) / width
    k = torch.exp(-0.5 * d * d)
    if weights is not None:
        k = k * weights.unsqueeze(-1)
    h = k.sum(1)
    return h / h.sum(1, keepdim=True).clamp_min(1e-12)


def emd_1d(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Earth mover's distance between 1-D histograms ``[B, K]`` (in units of bins / K)."""
    return (torch.cumsum(p, -1) - torch.cumsum(q, -1)).abs().mean(-1)


def _hist_distance(p: torch.Tensor, q: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "emd":
        return emd_1d(p, q)
    if metric == "l1":
        return (p - q).abs().sum(-1)
    if metric == "chi2":
        return ((p - q) ** 2 / (p + q + 1e-8)).sum(-1) / 2
    raise ConfigError(f"histogram metric must be 'emd', 'l1' or 'chi2', got {metric!r}")


def luminance(x: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` → ``[B,H,W]`` Rec.709 luma of display values."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1)


def _subsample(x: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """Area-downsample ``[B,C,H,W]`` so H·W ≤ max_pixels (keeps soft-binning memory bounded)."""
    h, w = x.shape[-2:]
    if max_pixels and h * w > max_pixels:
        f = math.sqrt(h * w / max_pixels)
        x = F.interpolate(x, size=(max(1, int(h / f)), max(1, int(w / f))), mode="area")
    return x


class Histogram(DisplayObjective):
    """Luminance-histogram matching with soft bins (lighting by example)."""

    name = "histogram"

    def __init__(self, tonemap: str | None = None, exposure: float = 0.0, bins: int = 64,
                 metric: str = "emd", max_pixels: int = 65536):
        super().__init__(tonemap, exposure)
        if bins < 2:
            raise ConfigError("histogram: bins must be >= 2")
        _hist_distance(torch.zeros(1, 2), torch.zeros(1, 2), metric)
        self.bins, self.metric, self.max_pixels = int(bins), metric, int(max_pixels)

    def hist(self, d: torch.Tensor) -> torch.Tensor:
        y = luminance(_subsample(d, self.max_pixels)).flatten(1)
        return soft_histogram(y, self.bins)

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        ht = self.target_features(t, self.hist)
        return _hist_distance(self.hist(self.display(images)), ht.expand(images.shape[0], -1), self.metric)


class GradientHistogram(DisplayObjective):
    """Match histograms of luminance-gradient orientation and magnitude (light direction)."""

    name = "gradient-histogram"

    def __init__(self, tonemap: str | None = None, exposure: float = 0.0, orientation_bins: int = 16,
                 magnitude_bins: int = 32, magnitude_weight: float = 1.0, luminance_weight: float = 0.0,
                 max_pixels: int = 65536):
        super().__init__(tonemap, exposure)
        if orientation_bins < 4 or magnitude_bins < 2:
            raise ConfigError("gradient-histogram: orientation_bins must be >= 4 and magnitude_bins >= 2")
        self.ob, self.mb = int(orientation_bins), int(magnitude_bins)
        self.magnitude_weight, self.luminance_weight = float(magnitude_weight), float(luminance_weight)
        self.max_pixels = int(max_pixels)

    def hists(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = luminance(_subsample(d, self.max_pixels))
        gx = (y[:, :, 2:] - y[:, :, :-2])[:, 1:-1, :] / 2
        gy = (y[:, 2:, :] - y[:, :-2, :])[:, :, 1:-1] / 2
        gx, gy = gx.flatten(1), gy.flatten(1)
        mag = torch.sqrt(gx * gx + gy * gy + 1e-12)
        phi = torch.arange(self.ob, device=d.device, dtype=d.dtype) * (2 * math.pi / self.ob)
        cos = (gx.unsqueeze(-1) * torch.cos(phi) + gy.unsqueeze(-1) * torch.sin(phi)) / mag.unsqueeze(-1)
        kappa = self.ob / 2.0  # von Mises concentration ≈ one bin width
        w = torch.exp(kappa * (cos - 1)) * mag.unsqueeze(-1)
        orient = w.sum(1)
        orient = orient / orient.sum(1, keepdim=True).clamp_min(1e-12)
        magh = soft_histogram(mag.clamp(max=0.5) * 2, self.mb)
        lum = soft_histogram(y.flatten(1), 64) if self.luminance_weight else orient[:, :0]
        return orient, magh, lum

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        ot, mt, lt = self.target_features(t, self.hists)
        o, m, lum = self.hists(self.display(images))
        # Orientation is circular: L1 of histograms (an EMD would depend on where 0 rad is).
        out = (o - ot).abs().sum(-1) / 2 + self.magnitude_weight * emd_1d(m, mt.expand_as(m))
        if self.luminance_weight:
            out = out + self.luminance_weight * emd_1d(lum, lt.expand_as(lum))
        return out


# -- style (Gram) -------------------------------------------------------------------------------
class PyramidFeatures(torch.nn.Module):
    """Colour and edge channels over a Gaussian pyramid; needs no weights."""

    def __init__(self, levels: int = 4):
        super().__init__()
        self.levels = int(levels)
        sob = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        self.register_buffer("edges", torch.stack([sob, sob.t()]).unsqueeze(1))  # [2,1,3,3]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in range(self.levels):
            if level:
                if min(x.shape[-2:]) < 4:
                    break
                x = F.avg_pool2d(x, 2)
            y = luminance(x).unsqueeze(1)
            e = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), self.edges.to(x.dtype))
            out.append(torch.cat([x, e.abs() * 4, e * 4], 1))
        return out


class RandomConvFeatures(torch.nn.Module):
    """A fixed random conv net (seeded): texture statistics without pretrained weights."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        layers, cin = [], 3
        for cout in widths:
            conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / (cin * 9)))
                conv.bias.zero_()
            layers.append(conv)
            cin = cout
        self.convs = torch.nn.ModuleList(layers)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = x - 0.5
        for i, conv in enumerate(self.convs):
            if i:
                x = F.avg_pool2d(x, 2)
            x = F.relu(conv(x))
            out.append(x)
        return out


FEATURES: dict[str, Callable[[], torch.nn.Module]] = {"pyramid": PyramidFeatures, "random": RandomConvFeatures}


def load_features(spec: str | Callable) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """A feature extractor from a built-in name, an import string ``pkg.mod:factory``, or a callable."""
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"style features must be a name or 'package.module:factory', got {spec!r}")
    if spec in FEATURES:
        return FEATURES[spec]()
    if ":" not in spec:
        raise ConfigError(f"unknown style features {spec!r}; use one of {list(FEATURES)} or "
                          "'package.module:factory' (a function returning a module [B,3,H,W] -> list of maps)")
    mod, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"style features {spec!r} could not be imported: {e}") from None
    return factory()


def gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


class Style(DisplayObjective):
    """Gatys style loss: squared Gram-matrix differences over a pluggable feature extractor."""

    name = "style"

    def __init__(self, tonemap: str | None = None, exposure: float = 0.0,
                 features: str | Callable = "pyramid", layer_weights: Sequence[float] | None = None):
        super().__init__(tonemap, exposure)
        self.features = load_features(features)
        self.layer_weights = list(layer_weights) if layer_weights is not None else None

    def grams(self, d: torch.Tensor) -> list[torch.Tensor]:
        # A network's weights fix its dtype (float32 for `random` or a pretrained one); renderers
        # may return float64 (the toy renderer does), so cast the images, not the network.
        weights = next(self.features.parameters(), None) if isinstance(self.features, torch.nn.Module) else None
        if weights is not None and d.dtype != weights.dtype:
            d = d.to(weights.dtype)
        feats = self.features(d)
        if isinstance(feats, torch.Tensor):
            feats = [feats]
        return [gram(f) for f in feats]

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        t = check_target(self.name, images, target)
        gt = self.target_features(t, self.grams)
        gs = self.grams(self.display(images))
        if self.layer_weights is not None and len(self.layer_weights) != len(gs):
            raise ConfigError(f"style: {len(self.layer_weights)} layer_weights for {len(gs)} feature layers")
        w = self.layer_weights or [1.0] * len(gs)
        return sum(wi * ((g - t_).pow(2).flatten(1).mean(1)) for wi, g, t_ in zip(w, gs, gt))


@hookimpl
def rendergrad_objectives():
    return [SSIM, Histogram, GradientHistogram, Style]
