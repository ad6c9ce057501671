"""The bridge wire format, version 1 (specified for people in ``docs/bridge-protocol.md``).

A message is a ZeroMQ multipart message: frame 0 is a UTF-8 JSON object (the header), any
further frames are raw little-endian arrays whose shape the header states. JSON for the few
fields a person debugs, raw frames for the megabytes: a 256² RGBA float32 image costs one
``memcpy`` instead of a text encoding, and nothing received is ever unpickled or executed, so
a server can be written in any language from the document alone.

This module holds only pure functions (encode, decode, validate) shared by the client and
the server; it opens no sockets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
OPS = ("hello", "describe", "render", "ping", "shutdown")

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024   # a reply of 256 × 256² RGBA float32 images is 256 MiB
MAX_HEADER_BYTES = 64 * 1024                    # a header is a few hundred bytes; refuse anything silly
PARAM_DTYPE = "<f8"                             # parameter vectors: float64, row-major [batch, n]
IMAGE_DTYPE = "<f4"                             # images: float32, row-major [height, width, channels]

# Error codes a server may reply with. Clients branch on the code; the message is for people.
E_BAD_MESSAGE = "bad_message"            # not a multipart message with a JSON object header
E_BAD_VERSION = "unsupported_version"    # header "v" is not a version the server speaks
E_UNKNOWN_OP = "unknown_op"
E_BAD_REQUEST = "bad_request"            # a field is missing or has the wrong type/shape
E_TOO_LARGE = "too_large"                # the request exceeds the server's max message size
E_UNKNOWN_PARAMETER = "unknown_parameter"
E_OUT_OF_BOUNDS = "out_of_bounds"
E_RENDER_FAILED = "render_failed"
E_INTERNAL = "internal"
ERROR_CODES = (E_BAD_MESSAGE, E_BAD_VERSION, E_UNKNOWN_OP, E_BAD_REQUEST, E_TOO_LARGE,
               E_UNKNOWN_PARAMETER, E_OUT_OF_BOUNDS, E_RENDER_FAILED, E_INTERNAL)


class ProtocolError(Exception):
    """A message breaks the protocol. ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Request:
    """A decoded, validated request."""

    op: str
    id: Any
    header: dict[str, Any]
    params: np.ndarray | None = None           # [batch, n] float64 for "render"
    seeds: list[int] | None = None
    names: list[str] | None = None


@dataclass
class Reply:
    """A decoded reply: ``ok`` with its header, or an error with ``code`` and ``message``."""

    id: Any
    ok: bool
    header: dict[str, Any]
    images: np.ndarray | None = None           # [batch, H, W, C] float32 for "render"
    code: str = ""
    message: str = ""
    frames_bytes: int = field(default=0)


def _dumps(obj: dict[str, Any]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON; a server in another language would choke.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _loads_header(frame: bytes) -> dict[str, Any]:
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(E_TOO_LARGE, f"header frame is {len(frame)} bytes; the limit is {MAX_HEADER_BYTES}")
    try:
        text = bytes(frame).decode("utf-8")
        header = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(E_BAD_MESSAGE, f"frame 0 must be a UTF-8 JSON object: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError(E_BAD_MESSAGE, f"frame 0 must be a JSON object, got {type(header).__name__}")
    return header


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _valid_id(value: Any) -> Any:
    """Echo an id back only when it is a plain JSON scalar (never a huge nested object)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and abs(value) < 2 ** 53:
        return value
    if isinstance(value, str) and len(value) <= 128:
        return value
    return None


# -- requests ---------------------------------------------------------------------------------
def encode_request(op: str, req_id: Any, *, params: np.ndarray | None = None,
                   seeds: Sequence[int] | None = None, names: Sequence[str] | None = None,
                   extra: dict[str, Any] | None = None) -> list[bytes]:
    """Build the frames of a request. ``params`` ``[batch, n]`` goes in one float64 frame."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op, "id": req_id}
    if extra:
        header.update(extra)
    frames: list[Any] = []
    if op == "render":
        p = np.ascontiguousarray(np.asarray(params, dtype=PARAM_DTYPE))
        if p.ndim != 2:
            raise ValueError(f"render params must be [batch, n], got shape {p.shape}")
        header["batch"], header["n"] = int(p.shape[0]), int(p.shape[1])
        if seeds is not None:
            header["seeds"] = [int(s) for s in seeds]
        if names is not None:
            header["names"] = list(names)
        frames.append(memoryview(p).cast("B"))
    return [_dumps(header), *frames]


def decode_request(frames: Sequence[bytes], *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Request:
    """Parse and validate a request; raise :class:`ProtocolError` saying what is wrong.

    On an error the caller still wants the request id to echo it: see :func:`peek_id`.
    """
    if not frames:
        raise ProtocolError(E_BAD_MESSAGE, "empty message")
    total = sum(len(f) for f in frames)
    if total > max_message_bytes:
        raise ProtocolError(E_TOO_LARGE, f"request is {total} bytes; this server accepts at most "
                                         f"{max_message_bytes} (split the batch)")
    header = _loads_header(frames[0])
    v = header.get("v")
    if type(v) is not int or v not in SUPPORTED_VERSIONS:  # 1.0 and true are not the version 1
        raise ProtocolError(E_BAD_VERSION, f"protocol version {v!r} is not supported; this server speaks "
                                           f"{list(SUPPORTED_VERSIONS)} (an integer)")
    op = header.get("op")
    if op not in OPS:
        raise ProtocolError(E_UNKNOWN_OP, f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    if "id" not in header:
        raise ProtocolError(E_BAD_REQUEST, "every request needs an id (an integer or a string of at most 128 "
                                           "characters), echoed in the reply")
    if _valid_id(header["id"]) is None:
        raise ProtocolError(E_BAD_REQUEST, "id must be an integer or a string of at most 128 characters")
    req = Request(op=op, id=header.get("id"), header=header)
    if op != "render":
        if len(frames) != 1:
            raise ProtocolError(E_BAD_REQUEST, f"op {op!r} takes no data frames, got {len(frames) - 1}")
        return req
    batch, n = header.get("batch"), header.get("n")
    for key, val in (("batch", batch), ("n", n)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ProtocolError(E_BAD_REQUEST, f"render needs an integer {key!r} >= 0, got {val!r}")
    if batch < 1:
        raise ProtocolError(E_BAD_REQUEST, "render needs batch >= 1")
    if len(frames) != 2:
        raise ProtocolError(E_BAD_REQUEST, f"render takes exactly one data frame (the float64 parameters), "
                                           f"got {len(frames) - 1}")
    expected = batch * n * 8
    if len(frames[1]) != expected:
        raise ProtocolError(E_BAD_REQUEST, f"parameter frame is {len(frames[1])} bytes; batch={batch} × n={n} "
                                           f"float64 needs {expected}")
    params = np.frombuffer(frames[1], dtype=PARAM_DTYPE).reshape(batch, n).astype(np.float64)
    if not np.isfinite(params).all():
        raise ProtocolError(E_OUT_OF_BOUNDS, "parameters contain NaN or infinity")
    seeds = header.get("seeds")
    if seeds is not None:
        if (not isinstance(seeds, list) or len(seeds) != batch
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 31 for s in seeds)):
            raise ProtocolError(E_BAD_REQUEST, f"seeds must be a list of {batch} integers in [0, 2^31)")
    names = header.get("names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
            raise ProtocolError(E_BAD_REQUEST, "names must be a list of strings")
    req.params, req.seeds, req.names = params, seeds, names
    return req


def peek_id(frames: Sequence[bytes]) -> Any:
    """The request id of a possibly malformed message, or None (for error replies)."""
    try:
        return _valid_id(_loads_header(frames[0]).get("id")) if frames else None
    except ProtocolError:
        return None


# -- replies ----------------------------------------------------------------------------------
def encode_reply(op: str, req_id: Any, body: dict[str, Any] | None = None,
                 images: np.ndarray | None = None) -> list[Any]:
    """An ``ok`` reply. ``images`` ``[batch, H, W, C]`` go one float32 frame per image."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op, "id": _valid_id(req_id), "ok": True}
    header.update(body or {})
    frames: list[Any] = []
    if images is not None:
        imgs = np.ascontiguousarray(images, dtype=IMAGE_DTYPE)
        if imgs.ndim != 4:
            raise ValueError(f"images must be [batch, height, width, channels], got shape {imgs.shape}")
        header["batch"] = int(imgs.shape[0])
        header["shape"] = [int(s) for s in imgs.shape[1:]]
        header["dtype"] = "float32"
        frames = [memoryview(imgs[i]).cast("B") for i in range(imgs.shape[0])]
    return [_dumps(header), *frames]


def encode_error(req_id: Any, code: str, message: str, op: str | None = None) -> list[bytes]:
    header = {"v": PROTOCOL_VERSION, "op": op, "id": _valid_id(req_id), "ok": False,
              "error": {"code": code, "message": str(message)[:4000]}}
    return [_dumps(header)]


def decode_reply(frames: Sequence[bytes]) -> Reply:
    """Parse a reply; a malformed one raises :class:`ProtocolError` (the server is broken)."""
    if not frames:
        raise ProtocolError(E_BAD_MESSAGE, "empty reply")
    header = _loads_header(frames[0])
    req_id = header.get("id")
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(E_BAD_VERSION, f"reply has protocol version {header.get('v')!r}, "
                                           f"expected {PROTOCOL_VERSION}")
    if header.get("ok") is not True:
        err = header.get("error") if isinstance(header.get("error"), dict) else {}
        return Reply(req_id, False, header, code=str(err.get("code", E_INTERNAL)),
                     message=str(err.get("message", "server replied ok=false without a message")))
    rep = Reply(req_id, True, header, frames_bytes=sum(len(f) for f in frames[1:]))
    if "shape" in header:
        shape, batch = header.get("shape"), header.get("batch")
        if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape)
                or not isinstance(batch, int) or batch != len(frames) - 1):
            raise ProtocolError(E_BAD_MESSAGE, f"render reply needs shape [H, W, C] and one frame per image; "
                                               f"got shape={shape!r}, batch={batch!r}, {len(frames) - 1} frames")
        if header.get("dtype", "float32") != "float32":
            raise ProtocolError(E_BAD_MESSAGE, f"image dtype {header.get('dtype')!r}; only float32 is defined")
        per = math.prod(shape) * 4
        out = np.empty((batch, *shape), dtype=np.float32)
        for i, f in enumerate(frames[1:]):
            if len(f) != per:
                raise ProtocolError(E_BAD_MESSAGE, f"image frame {i} is {len(f)} bytes; shape {shape} float32 "
                                                   f"needs {per}")
            out[i] = np.frombuffer(f, dtype=IMAGE_DTYPE).reshape(shape)
        rep.images = out
    return rep


# -- the parameter schema ---------------------------------------------------------------------
SCHEMA_KEYS = {"name", "kind", "shape", "low", "high", "init", "log", "choices", "description", "sigma_scale"}


def schema_to_space(entries: Any):
    """The ``describe`` reply's ``params`` list → a :class:`rendergrad.ParamSpace`.

    Validated strictly: a server in another language gets a message naming the bad entry.
    """
    from rendergrad import Param, ParamSpace
    from rendergrad.errors import ParameterError
    if not isinstance(entries, list):
        raise ProtocolError(E_BAD_MESSAGE, "describe reply: params must be a list of parameter objects")
    params = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise ProtocolError(E_BAD_MESSAGE, f"describe reply: params[{i}] must be an object with a string name")
        kw = {k: v for k, v in e.items() if k in SCHEMA_KEYS and v is not None}
        kw["shape"] = tuple(kw.get("shape") or ())
        try:
            params.append(Param(**kw))
        except (ParameterError, TypeError) as err:
            raise ProtocolError(E_BAD_MESSAGE, f"describe reply: params[{i}] ({e.get('name')!r}) is invalid: {err}") \
                from None
    try:
        return ParamSpace(params)
    except ParameterError as err:
        raise ProtocolError(E_BAD_MESSAGE, f"describe reply: {err}") from None
