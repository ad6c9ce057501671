"""Which Mitsuba variant to run, and whether Mitsuba can run here at all.

Why a module of its own: ``rendergrad plugins`` asks every renderer whether it is usable
without building it, and Mitsuba's failure modes are unfriendly (an old libLLVM makes the first
render abort the whole process). The checks here turn them into a sentence that says what to
install, before anything renders.
"""

from __future__ import annotations

from typing import Any

from rendergrad.errors import ConfigError, PluginUnavailableError

# Variants tried in this order when none is given: the GPU, then the vectorised CPU backend,
# then the (slow, non-differentiable) scalar CPU path tracer.
AUTO_ORDER = ("cuda_ad_rgb", "llvm_ad_rgb", "scalar_rgb")
MIN_LLVM = 16  # drjit's LLVM backend aborts with "Cannot select: fminimum" on LLVM 15

LLVM_HINT = ("install libLLVM >= 16 (Debian/Ubuntu: `apt-get install libllvm19`; `./dev setup` does it) "
             "or point DRJIT_LIBLLVM_PATH at libLLVM-19.so")


def import_mitsuba() -> tuple[Any, Any]:
    """Import ``mitsuba`` and ``drjit`` or raise an error that names the extra to install."""
    try:
        import drjit as dr
        import mitsuba as mi
    except ImportError as e:  # pragma: no cover - the test environment has Mitsuba
        raise PluginUnavailableError(
            f"the mitsuba renderer needs Mitsuba 3: pip install 'rendergrad[mitsuba]' ({e})") from None
    return mi, dr


def llvm_status() -> tuple[bool, str]:
    """``(True, "")`` when drjit's LLVM backend is usable, else why not and what to install."""
    _, dr = import_mitsuba()
    if not dr.has_backend(dr.JitBackend.LLVM):
        return False, f"drjit found no libLLVM, so llvm_ad_rgb cannot run: {LLVM_HINT}"
    try:
        major = int(dr.detail.llvm_version()[0])
    except Exception:  # pragma: no cover - older drjit without the query
        return True, ""
    if major < MIN_LLVM:
        return False, (f"drjit loaded libLLVM {major}, which crashes Mitsuba's renders "
                       f"(needs >= {MIN_LLVM}): {LLVM_HINT}")
    return True, ""


def cuda_status() -> bool:
    _, dr = import_mitsuba()
    try:
        return bool(dr.has_backend(dr.JitBackend.CUDA))
    except Exception:  # pragma: no cover
        return False


def variant_usable(variant: str) -> tuple[bool, str]:
    mi, _ = import_mitsuba()
    if variant not in mi.variants():
        return False, f"variant {variant!r} is not compiled into this Mitsuba; it has: {', '.join(mi.variants())}"
    if variant.startswith("llvm_"):
        return llvm_status()
    if variant.startswith("cuda_") and not cuda_status():
        return False, f"variant {variant!r} needs an NVIDIA GPU with a CUDA driver; none was found"
    return True, ""


def choose_variant(requested: str | None = None) -> str:
    """The requested variant if usable (else a clear error), or the first usable of :data:`AUTO_ORDER`."""
    if requested:
        ok, why = variant_usable(requested)
        if not ok:
            raise ConfigError(f"mitsuba renderer: {why}")
        return requested
    reasons = []
    for v in AUTO_ORDER:
        ok, why = variant_usable(v)
        if ok:
            return v
        reasons.append(why)
    raise PluginUnavailableError("mitsuba renderer: no usable variant: " + "; ".join(reasons))


def activate(variant: str) -> Any:
    """Make ``variant`` Mitsuba's current one (a process-wide setting) and return the module."""
    mi, _ = import_mitsuba()
    if mi.variant() != variant:
        mi.set_variant(variant)
    return mi


def availability() -> tuple[bool, str]:
    """What ``Renderer.available()`` reports: usable when a differentiable variant runs here."""
    try:
        import_mitsuba()
    except PluginUnavailableError as e:
        return False, str(e)
    if cuda_status():
        return True, ""
    ok, why = llvm_status()
    if ok:
        return True, ""
    return False, why + " (only the slow, forward-only scalar_rgb variant works without it: construct " \
                        "MitsubaRenderer(..., variant=\"scalar_rgb\") directly to use it anyway)"
