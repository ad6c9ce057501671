"""A bridge server written from docs/bridge-protocol.md alone: plain pyzmq and numpy.

It does not import rendergrad. It "renders" a soft-edged disc at (x, y) with a brightness
parameter, to show everything a studio's server has to do:

    python examples/bridge/minimal_server.py tcp://127.0.0.1:5555
    rendergrad run examples/bridge/minimal.toml --out runs/minimal     # attaches to it

Options: --delay SECONDS (pretend each image takes that long), --size N (image N×N),
--margin M (x and y range over [M, 1 - M] instead of [0, 1]; bounds such as 0.15 and 0.85 are
not exact in binary floating point, so a client must send them as float64, unrounded).
"""

import argparse
import json
import time

import numpy as np
import zmq

PARAMS = [
    {"name": "x", "kind": "continuous", "shape": [], "low": 0.0, "high": 1.0, "init": 0.3, "log": False, "choices": None},
    {"name": "y", "kind": "continuous", "shape": [], "low": 0.0, "high": 1.0, "init": 0.7, "log": False, "choices": None},
    {"name": "power", "kind": "continuous", "shape": [], "low": 0.0, "high": 4.0, "init": 1.0, "log": False,
     "choices": None},
]
LOW = np.array([p["low"] for p in PARAMS])
HIGH = np.array([p["high"] for p in PARAMS])


def set_margin(margin):
    """x, y over [margin, 1 - margin]: the bounds every request is checked against, exactly."""
    for p in PARAMS[:2]:
        p["low"], p["high"] = margin, 1.0 - margin
        p["init"] = min(max(p["init"], margin), 1.0 - margin)
    LOW[:2], HIGH[:2] = margin, 1.0 - margin
MAX_BYTES = 64 * 1024 * 1024


def render(x, y, power, size):
    yy, xx = np.mgrid[0:size, 0:size] / size  # row 0 is the top of the image
    d = np.sqrt((xx - x) ** 2 + (yy - y) ** 2)
    cover = np.clip((0.2 - d) / 0.05 + 0.5, 0.0, 1.0)
    img = np.zeros((size, size, 3), np.float32)
    img[..., 0] = 0.05 + power * cover
    img[..., 1] = 0.05 + 0.5 * power * cover
    img[..., 2] = 0.08
    return img


def error(req_id, op, code, message):
    return [json.dumps({"v": 1, "op": op, "id": req_id, "ok": False,
                        "error": {"code": code, "message": message}}).encode()]


def reply(req_id, op, **fields):
    return json.dumps({"v": 1, "op": op, "id": req_id, "ok": True, **fields}).encode()


def handle(frames, size, delay):
    if sum(len(f) for f in frames) > MAX_BYTES:
        return error(None, None, "too_large", "request too large")
    try:
        head = json.loads(frames[0].decode("utf-8"))
        assert isinstance(head, dict)
    except Exception:
        return error(None, None, "bad_message", "frame 0 must be a UTF-8 JSON object")
    req_id, op = head.get("id"), head.get("op")
    if not isinstance(req_id, (int, str)) or isinstance(req_id, bool):
        req_id = None
    if type(head.get("v")) is not int or head.get("v") != 1:  # 1.0 is not the integer 1
        return error(req_id, op, "unsupported_version", "this server speaks version 1")
    if req_id is None:
        return error(None, op, "bad_request", "every request needs an integer or string id")
    if op == "hello":
        if 1 not in (head.get("versions") or [1]):
            return error(req_id, op, "unsupported_version", "this server speaks version 1")
        return [reply(req_id, op, version=1, server="minimal-disc",
                      capabilities={"ops": ["hello", "describe", "render", "ping", "shutdown"], "seeds": False,
                                    "max_message_bytes": MAX_BYTES, "max_batch": 256, "image_dtype": "float32"})]
    if op == "describe":
        return [reply(req_id, op, name="minimal-disc", params=PARAMS,
                      image={"height": size, "width": size, "channels": 3}, light_parameters=["power"])]
    if op == "ping":
        return [reply(req_id, op, time=time.time())]
    if op == "shutdown":
        return [reply(req_id, op)]
    if op != "render":
        return error(req_id, op, "unknown_op", f"unknown op {op!r}")
    names = head.get("names")
    if names is not None and names != [p["name"] for p in PARAMS]:
        unknown = [n for n in names if n not in [p["name"] for p in PARAMS]]
        return error(req_id, op, "unknown_parameter" if unknown else "bad_request", f"names {names} not declared")
    batch, n = head.get("batch"), head.get("n")
    if not isinstance(batch, int) or not isinstance(n, int) or batch < 1 or n != len(PARAMS) or len(frames) != 2 \
            or len(frames[1]) != batch * n * 8:
        return error(req_id, op, "bad_request", f"need batch >= 1, n = {len(PARAMS)} and one float64 frame")
    if batch > 256:
        return error(req_id, op, "too_large", "max_batch is 256")
    params = np.frombuffer(frames[1], dtype="<f8").reshape(batch, n)
    bad = ~np.isfinite(params) | (params < LOW) | (params > HIGH)  # exact: no tolerance
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        return error(req_id, op, "out_of_bounds", f"theta[{row}, {col}] ({PARAMS[col]['name']}) = "
                     f"{params[row, col]!r} outside [{LOW[col]!r}, {HIGH[col]!r}]")
    images = []
    for x, y, power in params:
        time.sleep(delay)
        images.append(render(x, y, power, size).astype("<f4").tobytes())
    return [reply(req_id, op, batch=batch, shape=[size, size, 3], dtype="float32"), *images]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5555")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--margin", type=float, default=0.0)
    args = ap.parse_args()
    set_margin(args.margin)
    if not args.endpoint.startswith(("ipc://", "tcp://127.0.0.1:")):
        raise SystemExit("bind to tcp://127.0.0.1:PORT or ipc:// only")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.bind(args.endpoint)
    print("listening on", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        frames = sock.recv_multipart()
        out = handle(frames, args.size, args.delay)
        sock.send_multipart(out)
        if json.loads(out[0]).get("op") == "shutdown" and json.loads(out[0]).get("ok"):
            break
    sock.close()
    ctx.term()


if __name__ == "__main__":
    main()
