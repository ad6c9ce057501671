"""The ``clip`` objective on a small random open_clip checkpoint saved by the test (no downloads)."""

from __future__ import annotations

import json
import sys

import pytest
import torch


from rendergrad.errors import ConfigError
from rendergrad.plugins.clip_objective import CLIPObjective, ensure_torchvision, import_open_clip
from rendergrad.renderers.olat import OlatBasis, OlatRenderer
from rendergrad.renderers.olat_tools import olat_ad

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Config JSON + a checkpoint of randomly initialised weights, written like a user's own file."""
    d = tmp_path_factory.mktemp("clip")
    cfg = d / "rg-tiny-clip.json"
    cfg.write_text(json.dumps(TINY))
    open_clip = import_open_clip()
    torch.manual_seed(0)
    open_clip.add_model_config(cfg)
    model = open_clip.create_model("rg-tiny-clip", pretrained=None)
    ckpt = d / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return cfg, ckpt


def test_standin_only_when_torchvision_is_missing():
    ensure_torchvision()
    tv = sys.modules["torchvision"]
    import importlib.util
    if importlib.util.find_spec("torchvision") is None or "standin" in tv.__version__:
        from torchvision.transforms import Normalize, CenterCrop
        x = torch.rand(3, 10, 12)
        assert CenterCrop(8)(x).shape == (3, 8, 8)
        torch.testing.assert_close(Normalize([0.5] * 3, [0.5] * 3)(x), (x - 0.5) / 0.5)


def test_loads_local_checkpoint_and_scores(tiny):
    cfg, ckpt = tiny
    o = CLIPObjective(checkpoint=str(ckpt), model=str(cfg), mode="text", text="a warmly lit room")
    # the weights really come from the file: the text embedding matches the saved model's
    open_clip = import_open_clip()
    ref = open_clip.create_model("rg-tiny-clip", pretrained=None)
    ref.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    tok = open_clip.get_tokenizer("rg-tiny-clip")(["a warmly lit room"])
    with torch.no_grad():
        e = torch.nn.functional.normalize(ref.encode_text(tok).float(), dim=-1)[0]
    torch.testing.assert_close(o.p_tgt, e, rtol=1e-4, atol=1e-5)
    imgs = torch.rand(3, 40, 56, 3, requires_grad=True)
    loss = o.loss(imgs, None)
    assert loss.shape == (3,) and bool(((loss >= 0) & (loss <= 2)).all())
    (g,) = torch.autograd.grad(loss.sum(), imgs)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    # image mode: distance to itself is zero, to another image is not
    oi = CLIPObjective(checkpoint=str(ckpt), model=str(cfg), mode="image")
    oi.prepare(imgs[0].detach())
    li = oi.loss(imgs.detach(), imgs[0].detach())
    assert float(li[0]) < 1e-5 and float(li[1]) > float(li[0])


def test_clear_errors(tiny, tmp_path):
    cfg, ckpt = tiny
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        CLIPObjective(checkpoint=str(tmp_path / "missing.pt"), model=str(cfg), mode="text", text="x")
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        CLIPObjective(model=str(cfg), mode="text", text="x")
    with pytest.raises(ConfigError, match="init_text"):
        CLIPObjective(checkpoint=str(ckpt), model=str(cfg), mode="relative", text="x")
    with pytest.raises(ConfigError, match="hf-hub"):
        CLIPObjective(checkpoint=str(ckpt), model="hf-hub:org/model", mode="text", text="x")
    with pytest.raises(ConfigError, match="could not load"):
        other = tmp_path / "rg-tiny-other.json"
        other.write_text(json.dumps(dict(TINY, text_cfg=dict(TINY["text_cfg"], width=48))))
        CLIPObjective(checkpoint=str(ckpt), model=str(other), mode="text", text="x")  # wrong architecture


def test_relative_text_loss_end_to_end(tiny, tmp_path):
    """OLAT-AD with the relative text loss runs with a user-supplied checkpoint, via the API and the CLI."""
    cfg, ckpt = tiny
    g = torch.Generator().manual_seed(1)
    basis = OlatBasis(["a", "b", "c"], torch.rand(3, 24, 32, 3, generator=g) ** 2)
    r = OlatRenderer(basis)
    o = CLIPObjective(checkpoint=str(ckpt), model=str(cfg), mode="relative",
                      text="a photo lit by warm orange light", init_text="a photo with flat grey light")
    res = olat_ad(r, o, None, batch=2, steps=15, augment="crop", tonemap="agx", sigma=0.2)
    assert res.multipliers.shape == (2, 3, 3)
    assert o.tonemap == "agx" and o.i_init is not None
    first, last = res.history[0]["mean_loss"], res.history[-1]["mean_loss"]
    assert last < first, (first, last)

    basis.save(tmp_path / "basis")
    from rendergrad.cli import main
    out = tmp_path / "run"
    rc = main(["olat", "optimize", str(tmp_path / "basis"), "--out", str(out), "--objective", "clip",
               "--checkpoint", str(ckpt), "--clip-model", str(cfg), "--text", "warm light",
               "--init-text", "flat light", "--steps", "5", "--batch", "2", "--augment", "crop"])
    assert rc == 0 and (out / "contact_sheet.png").is_file()
    assert json.loads((out / "multipliers.json").read_text())["settings"]["objective"] == "clip"
