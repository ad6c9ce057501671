"""``clip``: CLIP-like text and image similarity through open_clip, weights from a local file.

Modes (Savage et al., OLAT-AD; Gal et al., StyleGAN-NADA for the relative form):

* ``text`` (absolute): ``CosDist(I_cur, p_tgt)``; tends to over-expose (adversarial optima).
* ``relative``: ``CosDist(I_cur − I_init, p_tgt − p_init)``: move the image embedding in the
  direction that leads from ``init_text`` to ``text``. ``I_init`` is the embedding of the
  starting image: set it with :meth:`CLIPObjective.set_init` (OLAT-AD passes the unedited
  scene), or the mean embedding of the first batch scored is used.
* ``image``: ``CosDist(I_cur, I_target)`` against the run's target image.

Weights are never downloaded: ``checkpoint`` must name a local file (``.pt``/``.bin`` via
``torch.load(weights_only=True)``, or ``.safetensors``), and ``model`` an open_clip
architecture: a built-in name (``ViT-B-32``), a model-config JSON file, or
``local-dir:/path``. Images are tone-mapped (``tonemap``, ``exposure``), resized so the short
side matches the model, centre-cropped and normalised, all differentiably.

open_clip imports torchvision, whose wheels would replace a CPU torch with a CUDA build;
when torchvision is absent a small stand-in providing the few names open_clip touches is
registered (never replacing a real torchvision).
"""

from __future__ import annotations

import enum
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from rendergrad import Objective, hookimpl
from rendergrad.errors import ConfigError

from .objectives import check_target
from .tonemap import check_tonemap, tonemap as apply_tonemap

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("text", "relative", "image")


# -- torchvision stand-in ------------------------------------------------------------------------
class _NeedsTorchvision:
    """A transform open_clip names at import time but rendergrad never calls."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __call__(self, *args: Any, **kwargs: Any):
        raise RuntimeError(f"{type(self).__name__} needs the real torchvision; rendergrad's CLIP objective "
                           "preprocesses tensors itself and does not use open_clip's PIL transforms")


def _build_torchvision_standin() -> dict[str, types.ModuleType]:
    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"
        LANCZOS = "lanczos"

    def get_dimensions(img: torch.Tensor) -> list[int]:
        return [int(img.shape[-3]) if img.ndim >= 3 else 1, int(img.shape[-2]), int(img.shape[-1])]

    def resize(img: torch.Tensor, size: Any, interpolation: Any = InterpolationMode.BILINEAR, **_: Any):
        mode = getattr(interpolation, "value", interpolation)
        mode = mode if mode in ("nearest", "bilinear", "bicubic") else "bilinear"
        h, w = img.shape[-2:]
        if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
            s = size if isinstance(size, int) else size[0]
            size = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
        x = img.unsqueeze(0) if img.ndim == 3 else img
        out = F.interpolate(x.float(), size=tuple(size), mode=mode,
                            align_corners=False if mode != "nearest" else None)
        return out[0] if img.ndim == 3 else out

    def crop(img: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
        return img[..., top:top + height, left:left + width]

    def center_crop(img: torch.Tensor, output_size: Any) -> torch.Tensor:
        th, tw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        h, w = img.shape[-2:]
        return crop(img, max(0, (h - th) // 2), max(0, (w - tw) // 2), th, tw)

    def pad(img: torch.Tensor, padding: Sequence[int], fill: float = 0, **_: Any) -> torch.Tensor:
        left, top, right, bottom = padding
        return F.pad(img, (left, right, top, bottom), value=float(fill))

    def normalize(img: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        m = torch.as_tensor(mean, dtype=img.dtype, device=img.device).view(-1, 1, 1)
        s = torch.as_tensor(std, dtype=img.dtype, device=img.device).view(-1, 1, 1)
        return (img - m) / s

    def to_tensor(pic: Any):
        raise RuntimeError("to_tensor needs the real torchvision (PIL input)")

    class Compose:
        def __init__(self, transforms: Sequence[Any]):
            self.transforms = list(transforms)

        def __call__(self, x: Any) -> Any:
            for t in self.transforms:
                x = t(x)
            return x

    class Normalize:
        def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
            self.mean, self.std = mean, std

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return normalize(x, self.mean, self.std)

    class Resize:
        def __init__(self, size: Any, interpolation: Any = InterpolationMode.BILINEAR, **_: Any):
            self.size, self.interpolation = size, interpolation

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return resize(x, self.size, self.interpolation)

    class CenterCrop:
        def __init__(self, size: Any):
            self.size = size

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return center_crop(x, self.size)

    class FrozenBatchNorm2d(torch.nn.Module):
        """BatchNorm2d with fixed statistics and affine parameters."""

        def __init__(self, num_features: int, eps: float = 1e-5):
            super().__init__()
            self.eps = eps
            for n, v in (("weight", torch.ones), ("bias", torch.zeros), ("running_mean", torch.zeros),
                         ("running_var", torch.ones)):
                self.register_buffer(n, v(num_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            bias = self.bias - self.running_mean * scale
            return x * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)

    def module(name: str, **attrs: Any) -> types.ModuleType:
        m = types.ModuleType(name, "rendergrad stand-in for the parts of torchvision open_clip imports")
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        return m

    functional = module("torchvision.transforms.functional", get_dimensions=get_dimensions, resize=resize,
                        crop=crop, center_crop=center_crop, pad=pad, normalize=normalize, to_tensor=to_tensor,
                        InterpolationMode=InterpolationMode)
    placeholders = {n: type(n, (_NeedsTorchvision,), {}) for n in
                    ("RandomResizedCrop", "ToTensor", "ColorJitter", "Grayscale")}
    transforms = module("torchvision.transforms", functional=functional, InterpolationMode=InterpolationMode,
                        Compose=Compose, Normalize=Normalize, Resize=Resize, CenterCrop=CenterCrop, **placeholders)
    misc = module("torchvision.ops.misc", FrozenBatchNorm2d=FrozenBatchNorm2d)
    ops = module("torchvision.ops", misc=misc)
    root = module("torchvision", transforms=transforms, ops=ops, __version__="0.0+rendergrad.standin")
    root.__path__ = []  # a package, so `import torchvision.x` resolves through sys.modules
    return {"torchvision": root, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional, "torchvision.ops": ops, "torchvision.ops.misc": misc}


def ensure_torchvision() -> bool:
    """Register the stand-in when torchvision is not installed; ``True`` if the stand-in is used."""
    if "torchvision" in sys.modules:
        return "standin" in str(getattr(sys.modules["torchvision"], "__version__", ""))
    if importlib.util.find_spec("torchvision") is not None:
        return False
    sys.modules.update(_build_torchvision_standin())
    return True


def import_open_clip():
    """Import open_clip (with the torchvision stand-in if needed), or raise a clear error."""
    ensure_torchvision()
    try:
        import open_clip
    except ImportError as e:
        raise ConfigError(
            f"the clip objective needs open_clip ({e}): pip install 'rendergrad[clip]' and "
            "pip install --no-deps open_clip_torch") from None
    return open_clip


# -- model loading -------------------------------------------------------------------------------
_MODELS: dict[tuple, tuple[Any, Any]] = {}


def _resolve_model_name(open_clip: Any, model: str) -> str:
    if model.startswith("local-dir:"):
        d = Path(model[len("local-dir:"):])
        if not d.is_dir():
            raise ConfigError(f"clip: model directory not found: {d}")
        return model
    if model.startswith("hf-hub:"):
        raise ConfigError("clip: 'hf-hub:' models would be downloaded; give a local config file or "
                          "'local-dir:/path' and a local checkpoint")
    p = Path(model)
    if p.suffix == ".json":
        if not p.is_file():
            raise ConfigError(f"clip: model config file not found: {p}")
        try:
            cfg = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"clip: model config {p} is not valid JSON: {e}") from None
        if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg:
            raise ConfigError(f"clip: model config {p} needs 'embed_dim', 'vision_cfg' and 'text_cfg' "
                              "(the open_clip model-config format)")
        open_clip.add_model_config(p)
        return p.stem
    if model not in open_clip.list_models():
        raise ConfigError(f"clip: unknown open_clip architecture {model!r}; give a built-in name "
                          f"(e.g. ViT-B-32), a model-config .json file, or 'local-dir:/path'")
    return model


def load_clip(model: str, checkpoint: str | Path | None, device: str = "cpu") -> tuple[Any, Any]:
    """Build ``model`` and load ``checkpoint`` (a local file); cached per process. → (model, tokenizer)."""
    open_clip = import_open_clip()
    ckpt = None
    if checkpoint is not None:
        ckpt_path = Path(checkpoint).expanduser()
        if not ckpt_path.is_file():
            raise ConfigError(f"clip: checkpoint file not found: {ckpt_path}. Weights are not downloaded; "
                              "give the path of a local open_clip checkpoint (.pt, .bin or .safetensors)")
        ckpt = str(ckpt_path.resolve())  # an absolute path is never mistaken for a download tag
    elif not model.startswith("local-dir:"):
        raise ConfigError("clip: give `checkpoint`, the path of a local weights file (nothing is downloaded)")
    key = (model, ckpt, str(device))
    if key not in _MODELS:
        name = _resolve_model_name(open_clip, model)
        try:
            net = open_clip.create_model(name, pretrained=ckpt if not name.startswith("local-dir:") else None,
                                         device=device, pretrained_image=False, pretrained_text=False,
                                         weights_only=True)
        except (RuntimeError, AssertionError, KeyError, ValueError) as e:
            raise ConfigError(f"clip: could not load {ckpt} into architecture {model!r} "
                              f"({type(e).__name__}: {e}); check that `model` matches the checkpoint") from None
        net.train(False)  # inference mode: no dropout, frozen norms
        for p in net.parameters():
            p.requires_grad_(False)
        _MODELS[key] = (net, open_clip.get_tokenizer(name))
    return _MODELS[key]


class CLIPObjective(Objective):
    """CLIP-like cosine distance to a text prompt (absolute or relative) or to an image."""

    name = "clip"

    def __init__(self, checkpoint: str | None = None, model: str = "ViT-B-32", mode: str = "relative",
                 text: str | Sequence[str] | None = None, init_text: str | Sequence[str] | None = None,
                 tonemap: str | None = "srgb", exposure: float = 0.0, device: str = "cpu"):
        if mode not in MODES:
            raise ConfigError(f"clip: mode must be one of {MODES}, got {mode!r}")
        if mode in ("text", "relative") and not text:
            raise ConfigError(f"clip: mode {mode!r} needs `text`, the target prompt")
        if mode == "relative" and not init_text:
            raise ConfigError("clip: mode 'relative' needs `init_text`, a prompt describing the starting image "
                              "(e.g. 'a 3D rendering of a car with flat, boring lighting')")
        self.mode, self.tonemap, self.exposure = mode, check_tonemap(tonemap), float(exposure)
        self.device = torch.device(device)
        self.model, self.tokenizer = load_clip(model, checkpoint, device)
        visual = self.model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", OPENAI_MEAN), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", OPENAI_STD), device=self.device).view(1, 3, 1, 1)
        self.p_tgt = self.embed_text(text) if text else None
        self.p_init = self.embed_text(init_text) if init_text else None
        self.i_init: torch.Tensor | None = None
        self.i_target: torch.Tensor | None = None

    # -- embeddings ------------------------------------------------------------------------------
    def embed_text(self, text: str | Sequence[str]) -> torch.Tensor:
        """Unit-length mean embedding of one prompt or several (prompt ensembling)."""
        prompts = [text] if isinstance(text, str) else list(text)
        with torch.no_grad():
            e = self.model.encode_text(self.tokenizer(prompts).to(self.device)).float()
        return F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Linear ``[B,H,W,C]`` → model input ``[B,3,S,S]`` (tone map, resize, centre crop, normalise)."""
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ConfigError(f"clip: expected images [B, H, W, 1|3|4], got {tuple(images.shape)}")
        x = images[..., :3] if images.shape[-1] >= 3 else images.expand(*images.shape[:-1], 3)
        x = apply_tonemap(x.to(self.device, torch.float32), self.tonemap, self.exposure).permute(0, 3, 1, 2)
        th, tw = self.image_size
        h, w = x.shape[-2:]
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=s < 1)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[..., top:top + th, left:left + tw]
        return (x - self.mean) / self.std

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images)).float()

    def set_init(self, images: torch.Tensor) -> None:
        """Fix ``I_init`` (relative mode) to the mean embedding of ``images`` ``[B,H,W,C]`` or ``[H,W,C]``."""
        if images.ndim == 3:
            images = images.unsqueeze(0)
        with torch.no_grad():
            self.i_init = F.normalize(self.embed_images(images), dim=-1).mean(0)

    def prepare(self, target: torch.Tensor | None) -> None:
        self.i_target = None
        if target is not None and self.mode == "image":
            with torch.no_grad():
                self.i_target = F.normalize(self.embed_images(target.unsqueeze(0)), dim=-1)[0]

    def loss(self, images: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        emb = F.normalize(self.embed_images(images), dim=-1)
        if self.mode == "text":
            return 1.0 - emb @ self.p_tgt
        if self.mode == "image":
            if self.i_target is None:
                t = check_target(self.name, images, target)
                self.prepare(t)
            return 1.0 - emb @ self.i_target
        if self.i_init is None:
            self.i_init = emb.detach().mean(0)
        d_img = F.normalize(emb - self.i_init, dim=-1, eps=1e-8)
        d_txt = F.normalize(self.p_tgt - self.p_init, dim=-1, eps=1e-8)
        return 1.0 - d_img @ d_txt

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("open_clip") is None:
            return False, "needs open_clip: pip install 'rendergrad[clip]' && pip install --no-deps open_clip_torch"
        return True, ""


@hookimpl
def rendergrad_objectives():
    return [CLIPObjective]
