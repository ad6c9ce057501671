"""``report.html``: one self-contained page that says what a run did, to look at or to send.

Built from the run folder alone (``config.json``, ``result.json`` or the checkpoint,
``status.json``, the PNGs), so ``rendergrad report DIR`` can rebuild it for any run, finished or
not. Images are embedded as ``data:`` URIs and the page has no scripts or external links: it
opens the same from a mail attachment as from the run folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .plotting import convergence_plot
from .runs import load_run, param_error, target_params as run_target_params

REPORT_NAME = "report.html"
IMAGES = (("target", "target.png"), ("start", "start.png"), ("final", "final.png"))
MAX_VECTOR_SHOWN = 6

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;
 padding:0 16px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde1e8;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;vertical-align:middle}
.finished{background:#d8f3dc;color:#1b5e20}.interrupted{background:#fff3cd;color:#7a5b00}
.failed{background:#fde2e1;color:#8a1c1c}.running{background:#dbeafe;color:#1e40af}
.images{display:flex;gap:16px;flex-wrap:wrap}
figure{margin:0}figure img{width:240px;height:auto;image-rendering:pixelated;border:1px solid #ccd2dc;display:block;
 background:#000}
figcaption{text-align:center;color:#5b6475;font-size:13px;margin-top:4px}
.plot img{max-width:100%;border:1px solid #e5e8ee}.row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}.row>div:first-child{flex:0 1 540px}.row>div:last-child{flex:1 1 340px;min-width:0}
table{border-collapse:collapse;margin:4px 0}th,td{padding:3px 10px;border-bottom:1px solid #eceff3;text-align:left;
 vertical-align:top}th{background:#f5f7fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}pre{margin:0;white-space:pre-wrap;max-width:720px}
.err{color:#8a1c1c}.kv td:first-child{color:#5b6475;white-space:nowrap}
footer{margin-top:32px;color:#8a93a3;font-size:12px}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        flat = list(v)
        shown = ", ".join(_num(x) for x in flat[:MAX_VECTOR_SHOWN])
        return f"[{shown}{', …' if len(flat) > MAX_VECTOR_SHOWN else ''}]" + (
            f" ({len(flat)})" if len(flat) > MAX_VECTOR_SHOWN else "")
    return str(v)


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(f"<tr><td>{_esc(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f"<table class={cls}>{body}</table>"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and (not prefix or len(json.dumps(v, default=str)) > 60):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _value_html(v: Any) -> str:
    if isinstance(v, (dict, list)):
        text = json.dumps(v, default=str)
        if len(text) > 90:
            return f"<details><summary><code>{_esc(text[:80])}…</code></summary><pre>{_esc(json.dumps(v, indent=1, default=str))}</pre></details>"
        return f"<code>{_esc(text)}</code>"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _esc(_num(v))
    return f"<code>{_esc(v)}</code>" if isinstance(v, str) else _esc(_num(v))


def _params_table(history: list[dict[str, Any]], res: Mapping[str, Any], target: Mapping[str, Any] | None) -> str:
    start = (history[0].get("params") if history else None) or {}
    final = res.get("params") or {}
    best = res.get("best_params") or {}
    target = target or {}
    names: list[str] = []
    for d in (start, final, best, target):
        names += [n for n in d if n not in names]
    if not names:
        return "<p>No parameters recorded.</p>"
    cols = [("start", start), ("final", final), ("best", best)] + ([("target", target)] if target else [])
    head = "<tr><th>parameter</th>" + "".join(f"<th>{c}</th>" for c, _ in cols) + (
        "<th>|final − target|</th>" if target else "") + "</tr>"
    rows = []
    for n in names:
        cells = "".join(f"<td class=n>{_esc(_num(d.get(n)))}</td>" for _, d in cols)
        if target:
            err = param_error({n: final[n]}, {n: target[n]}) if n in final and n in target else None
            cells += f"<td class=n>{_esc(_num(err))}</td>"
        rows.append(f"<tr><td><code>{_esc(n)}</code></td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _images(run_dir: Path) -> str:
    figs = []
    for label, name in IMAGES:
        p = run_dir / name
        if p.exists():
            figs.append(f'<figure><img src="{data_uri(p.read_bytes())}" alt="{label}"><figcaption>{label}</figcaption></figure>')
    return f'<div class=images>{"".join(figs)}</div>' if figs else "<p>No images were recorded.</p>"


def build_report(run_dir: str | Path) -> str:
    """The report page of a run folder, as a string."""
    run_dir = Path(run_dir)
    d = load_run(run_dir)
    cfg, res, st = d["config"], d["result"], d["status"]
    history = res.get("history") or []
    status = st.get("status", "?")
    target_params = run_target_params(cfg, res)
    renderer, estimator = res.get("renderer") or "?", res.get("estimator") or "?"
    objective = (cfg.get("objective") or {}).get("name", "")

    plot_png = _plot_png(run_dir, d["finished"], history, renderer, estimator)
    summary = _summary(res, st, history, target_params)
    sections = [
        f"<h1>{_esc(run_dir.resolve().name)}</h1>",
        f"<p class=sub>{_esc(renderer)} · {_esc(objective)} · {_esc(estimator)} — "
        f"<span class='status {_esc(status)}'>{_esc(status)}</span></p>",
        "<h2>Images</h2>", _images(run_dir),
        "<div class=row><div><h2>Convergence</h2>",
        f'<div class=plot><img src="{data_uri(plot_png)}" alt="convergence: loss against renders"></div></div>',
        "<div><h2>Summary</h2>", _kv_table(summary), "</div></div>",
        "<h2>Parameters</h2>", _params_table(history, res, target_params),
    ]
    for key, title in (("workers", "Workers"), ("executor", "Executor")):
        block = res.get(key)
        if isinstance(block, Mapping) and block:
            sections += [f"<h2>{title}</h2>", _kv_table((k, _value_html(v)) for k, v in _flatten(block))]
    sheet = run_dir / "snapshots" / "sheet.png"
    if sheet.exists():
        sections += ["<h2>Snapshots</h2>",
                     f'<div class=plot><img src="{data_uri(sheet.read_bytes())}" alt="snapshots"></div>']
    if cfg:
        sections += ["<h2>Settings</h2>", _kv_table((k, _value_html(v)) for k, v in _flatten(cfg))]
    from . import __version__
    sections.append(f"<footer>rendergrad {_esc(__version__)} · {_esc(time.strftime('%Y-%m-%d %H:%M'))} · "
                    f"{_esc(run_dir.resolve())}</footer>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{_esc(run_dir.name)} — rendergrad</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")


def _plot_png(run_dir: Path, finished: bool, history: list, renderer: str, estimator: str) -> bytes:
    """The runner's convergence plot of a finished run, else one drawn now from the history so far."""
    plot = run_dir / "convergence.png"
    if finished and plot.exists():  # drawn from this same history by the runner
        return plot.read_bytes()
    buf = io.BytesIO()
    convergence_plot(buf, {estimator: history}, best=True, title=f"{renderer} / {estimator}")
    return buf.getvalue()


def _summary(res: Mapping[str, Any], st: Mapping[str, Any], history: list,
             target_params: Any) -> list[tuple[str, str]]:
    """The summary table's rows (HTML-escaped values)."""
    status = st.get("status", "?")
    best = res.get("best_loss")
    if best is None and history:
        best = min(h["loss"] for h in history)
    summary = [
        ("status", f"<span class='status {_esc(status)}'>{_esc(status)}</span>"
                   + (f" <span class=err>{_esc(st['error'])}</span>" if st.get("error") else "")
                   + (f" <span>{_esc(st['note'])}</span>" if st.get("note") else "")),
        ("final loss", _esc(_num(res.get("loss")))),
        ("best loss", _esc(_num(best))),
        ("parameter error", _esc(_num(param_error(res.get("params"), target_params)))
         + (" <span class=sub>(distance to the target parameters)</span>" if target_params else "")),
        ("steps", _esc(_num(res.get("steps", len(history))))
         + (f" (stopped: {_esc(res['stopped'])})" if res.get("stopped") else "")),
        ("renders", _esc(_num(res.get("evaluations")))
         + " <span class=sub>spent by the optimization</span>"),
        ("extra renders", _esc(_num(res.get("extra_renders")))
         + " <span class=sub>target, start and final images, snapshots, previews</span>"),
        ("wall time", f"{_esc(_num(res.get('wall_time_s')))} s"),
        ("time rendering", f"{_esc(_num(res.get('render_seconds')))} s"),
    ]
    if st.get("sessions", 1) > 1:
        summary.append(("sessions", f"{st['sessions']} (resumed)"))
    return summary


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run folder (atomically) and return its path."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(build_report(run_dir), encoding="utf-8")
    tmp.replace(path)
    return path
