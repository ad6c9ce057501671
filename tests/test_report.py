"""report.html: self-contained, complete for finished and unfinished runs, and it renders in a real browser.

The browser test opens the report in headless Chromium (Debian package ``chromium``; ``./dev``
installs it), asks the page where its images are and how large they decoded, takes a
screenshot, and checks that those regions of the screenshot hold the pictures, not blank page.

``python tests/test_report.py docs/images/report.png`` makes the screenshot shown in
docs/watching.md with the same code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from rendergrad.report import build_report, write_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium")

# Appended to a copy of the page: once everything has loaded, write each image's decoded size and
# its place on the page into the DOM, where --dump-dom returns it.
PROBE = """<script>window.addEventListener('load', () => {
  const rows = [...document.images].map(i => { const r = i.getBoundingClientRect();
    return {alt: i.alt, natural: [i.naturalWidth, i.naturalHeight], complete: i.complete,
            box: [r.left + scrollX, r.top + scrollY, r.width, r.height]}; });
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({images: rows, height: document.documentElement.scrollHeight});
  document.body.appendChild(pre); });</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--force-device-scale-factor=1", "--no-first-run", f"--user-data-dir={profile}",
                               "--virtual-time-budget=5000", *args],
                              capture_output=True, text=True, timeout=120)


def probe(report: Path, width: int) -> dict:
    page = report.with_name("probe.html")
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    p = _chromium(f"--window-size={width},1000", "--dump-dom", page.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', p.stdout, re.S)
    assert m, f"chromium returned no probe ({p.returncode}): {p.stderr[-2000:]}"
    import html
    return json.loads(html.unescape(m.group(1)))


def screenshot(report: Path, png: Path, width: int = 1200, height: int | None = None) -> dict:
    """Screenshot ``report`` at ``width`` (the whole page unless ``height``); returns the probe."""
    info = probe(report, width)
    p = _chromium(f"--window-size={width},{height or info['height']}", f"--screenshot={png}", report.as_uri())
    assert png.exists(), f"chromium wrote no screenshot ({p.returncode}): {p.stderr[-2000:]}"
    return info


@needs_chromium
def test_report_renders_in_chromium_with_every_image(run_folders, tmp_path):
    report = run_folders / "prdpt" / "report.html"
    png = tmp_path / "shot.png"
    info = screenshot(report, png)
    from PIL import Image
    with Image.open(png) as im:
        shot = np.asarray(im.convert("RGB")).astype(int)
    by_alt = {i["alt"]: i for i in info["images"]}
    assert set(by_alt) == {"target", "start", "final", "convergence: loss against renders"}
    for alt, img in by_alt.items():
        assert img["complete"] and img["natural"][0] > 0 and img["natural"][1] > 0, (alt, img)
        x, y, w, h = (int(round(v)) for v in img["box"])
        assert w > 100 and h > 100, (alt, img)
        region = shot[y + 2:y + h - 2, x + 2:x + w - 2]
        assert region.shape[0] > 90 and region.shape[1] > 90, (alt, region.shape)
        # a picture, not the white page: ink (axes, lines, text or a render) and more than one colour
        assert (region.sum(-1) < 600).mean() > (0.5 if alt in ("target", "start", "final") else 0.02), alt
        assert len(np.unique(region.reshape(-1, 3), axis=0)) > 3, alt
    # the 16-pixel renders are decoded at their size and shown enlarged
    assert by_alt["final"]["natural"] == [16, 16] and by_alt["final"]["box"][2] >= 200
    # target and final are the real images: the disc sits in different places in start and final
    crops = {a: shot[int(i["box"][1]) + 2:int(i["box"][1] + i["box"][3]) - 2,
                     int(i["box"][0]) + 2:int(i["box"][0] + i["box"][2]) - 2] for a, i in by_alt.items()}
    assert np.abs(crops["start"] - crops["final"]).mean() > 1.0


def test_report_is_self_contained_and_complete(run_folders):
    text = (run_folders / "prdpt" / "report.html").read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    result = json.loads((run_folders / "prdpt" / "result.json").read_text())
    for needle in ("finished", "toy", "prdpt", "<th>start</th>", "<th>final</th>", "<th>best</th>",
                   "<th>target</th>", f"{result['evaluations']:,}", "wall time", "Settings", "optimizer.lr"):
        assert needle in text, needle
    assert f"{result['params']['x']:.6g}" in text and f"{result['best_params']['y']:.6g}" in text


def test_reports_of_runs_that_did_not_finish(run_folders):
    failed = (run_folders / "nested/failed/report.html").read_text()
    assert "status failed" in failed and "worker lost" in failed and "RendererFailure" in failed
    assert 'alt="final"' not in failed and 'alt="start"' in failed  # no final image: the run never got there
    interrupted = (run_folders / "interrupted/report.html").read_text()
    assert "status interrupted" in interrupted
    killed = build_report(run_folders / "killed")
    assert "status interrupted" in killed and "process ended" in killed


def test_worker_and_executor_blocks_are_shown_when_present(run_folders, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folders / "spsa", run)
    res = json.loads((run / "result.json").read_text())
    res["workers"] = {"restarts": 2, "retries": 5}
    res["executor"] = {"name": "processes", "workers": 4}
    (run / "result.json").write_text(json.dumps(res))
    text = write_report(run).read_text()
    assert "<h2>Workers</h2>" in text and "restarts" in text and "<h2>Executor</h2>" in text and "processes" in text
    assert "<h2>Workers</h2>" not in (run_folders / "spsa/report.html").read_text()


if __name__ == "__main__":  # the screenshot for docs/watching.md, from a real run
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/report.png")
    root = Path(__file__).resolve().parents[1]
    from rendergrad.config import load_config
    from rendergrad.runner import run_config
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "plateau-prdpt"
        run_config(load_config(root / "examples/toy/plateau.toml"), run, progress=False)
        screenshot(run / "report.html", out.resolve(), width=1100, height=1050)
    print(f"wrote {out}")
