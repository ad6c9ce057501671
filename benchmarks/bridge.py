"""The bridge's cost: transport overhead per image, against in-process bpy, and worker scaling.

    python -m benchmarks bridge [--quick] [--repeats 15] [--out FILE.json]

1. transport: a server whose render() returns a ready-made RGBA float32 image, so the time
   is the protocol alone (encode, ZeroMQ, decode), per image, over ipc:// and tcp://127.0.0.1,
   at 64² and 256², batch 1 and 8. Target: < 2 ms per 256² RGBA image over ipc.
2. blender: the same Cycles render of examples/bridge/blender_scene.py in this process (bpy
   imported here) and through one bridge worker, interleaved so both see the same machine
   load; the difference is the bridge's overhead on a real render.
3. scaling: images per second for a batch of 16 at 64² with 1, 2 and 4 workers (1 render
   thread each).

Timings on a shared CPU are noisy: compare numbers within one run (ratios), not across runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "bridge" / "blender_scene.py"
PARAMS = [
    {"name": "z", "path": 'objects["Sphere"].location[2]', "low": 0.3, "high": 2.0},
    {"name": "count", "path": 'objects["Cubes"].modifiers["Array"].count', "low": 1, "high": 6},
]


def _serve_null(endpoint: str, res: int) -> None:
    from rendergrad import Param, ParamSpace
    from rendergrad.renderers.bridge import Server

    class NullServer(Server):
        name = "null"

        def __init__(self):
            # a ready, contiguous batch: what a renderer hands over, so only the protocol is timed
            self.img = np.random.default_rng(0).random((8, res, res, 4), dtype=np.float32)

        def describe(self):
            return {"params": ParamSpace([Param("x")]), "image": {"height": res, "width": res, "channels": 4}}

        def render(self, params):
            return self.img[:params.shape[0]]

    NullServer().serve(endpoint, exit_with_parent=True)


def _times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median(fn, repeats: int) -> float:
    return statistics.median(_times(fn, repeats))


def transport(repeats: int, sizes: Sequence[int]) -> list[dict[str, Any]]:
    import torch
    from rendergrad.renderers.bridge import BridgeRenderer
    rows = []
    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="rendergrad-bench-")
    for res in sizes:
        for transport_name in ("ipc", "tcp"):
            if transport_name == "ipc":
                ep = f"ipc://{tmp}/null{res}.sock"
            else:
                import socket
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    ep = f"tcp://127.0.0.1:{s.getsockname()[1]}"
            proc = ctx.Process(target=_serve_null, args=(ep, res), daemon=True)
            proc.start()
            try:
                r = BridgeRenderer(endpoints=ep, timeout=60)
                try:
                    for batch in (1, 8):
                        theta = torch.full((batch, 1), 0.5)
                        r.render(theta)  # warm up
                        ts = _times(lambda: r.render(theta), repeats)
                        rows.append({"part": "transport", "transport": transport_name, "res": res, "batch": batch,
                                     "ms_per_image": 1e3 * statistics.median(ts) / batch,
                                     "ms_per_image_best": 1e3 * min(ts) / batch,
                                     "mb_per_image": res * res * 16 / 2 ** 20})
                finally:
                    r.close()
            finally:
                proc.terminate()
                proc.join(5)
    os.rmdir(tmp) if not os.listdir(tmp) else None
    return rows


def blender_overhead(repeats: int, sizes: Sequence[int], samples: int) -> list[dict[str, Any]]:
    import torch
    from rendergrad.renderers.blender import BlenderRenderer
    from rendergrad.renderers.blender.server import BlenderServer
    rows = []
    for res in sizes:
        local = BlenderServer(scene=str(SCENE), params=PARAMS, resolution=res, samples=samples, channels=4,
                              threads=1)
        remote = BlenderRenderer(scene=str(SCENE), params=PARAMS, resolution=res, samples=samples, channels=4,
                                 threads=1, workers=1)
        try:
            p = np.array([[0.8, 3.0]])
            local.render(p)
            remote.render(torch.from_numpy(p))
            t_local, t_remote = [], []
            for _ in range(repeats):  # interleaved: both see the same load
                t0 = time.perf_counter()
                local.render(p)
                t_local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                remote.render(torch.from_numpy(p))
                t_remote.append(time.perf_counter() - t0)
            ml, mr = statistics.median(t_local), statistics.median(t_remote)
            rows.append({"part": "blender", "res": res, "samples": samples, "inprocess_ms": 1e3 * ml,
                         "bridge_ms": 1e3 * mr, "overhead_ms": 1e3 * (mr - ml)})
        finally:
            remote.close()
            local.close()
    return rows


def scaling(workers_list: Sequence[int], batch: int, res: int, samples: int, repeats: int) -> list[dict[str, Any]]:
    import torch
    from rendergrad.renderers.blender import BlenderRenderer
    rows = []
    theta = torch.stack([torch.linspace(0.4, 1.8, batch, dtype=torch.float64),
                         torch.arange(batch, dtype=torch.float64) % 6 + 1], dim=1)
    for k in workers_list:
        t0 = time.perf_counter()
        r = BlenderRenderer(scene=str(SCENE), params=PARAMS, resolution=res, samples=samples, threads=1, workers=k,
                            chunk_size=max(1, batch // (2 * k)))
        start = time.perf_counter() - t0
        try:
            r.render(theta)
            t = _median(lambda: r.render(theta), repeats)
            rows.append({"part": "scaling", "workers": k, "batch": batch, "res": res, "samples": samples,
                         "images_per_s": batch / t, "startup_s": start, "stats": dict(r.stats)})
        finally:
            r.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks bridge", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, 64² only (a smoke run)")
    ap.add_argument("--skip-blender", action="store_true", help="transport only (no bpy needed)")
    ap.add_argument("--out", help="write all rows as JSON here")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    sizes = [64] if args.quick else [64, 256]
    print(f"# bridge benchmark  python {platform.python_version()}  cpus {os.cpu_count()}  repeats {repeats}")
    rows = transport(max(repeats, 20), sizes)
    print(f"{'transport':10} {'res':>5} {'batch':>5} {'MiB/img':>8} {'ms/img':>8} {'best':>8}")
    for r in rows:
        print(f"{r['transport']:10} {r['res']:5d} {r['batch']:5d} {r['mb_per_image']:8.2f} {r['ms_per_image']:8.3f} "
              f"{r['ms_per_image_best']:8.3f}", flush=True)
    if not args.skip_blender:
        b = blender_overhead(repeats, sizes, args.samples)
        print(f"\n{'blender':10} {'res':>5} {'in-proc ms':>10} {'bridge ms':>10} {'overhead ms':>11}")
        for r in b:
            print(f"{'cycles':10} {r['res']:5d} {r['inprocess_ms']:10.2f} {r['bridge_ms']:10.2f} {r['overhead_ms']:11.2f}")
        s = scaling(args.workers, 16, 64, args.samples, max(2, repeats // 3))
        print(f"\n{'workers':>7} {'img/s':>8} {'speedup':>8} {'startup s':>9}")
        for r in s:
            print(f"{r['workers']:7d} {r['images_per_s']:8.2f} {r['images_per_s'] / s[0]['images_per_s']:8.2f} "
                  f"{r['startup_s']:9.1f}")
        rows += b + s
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
