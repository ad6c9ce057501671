"""The :class:`Server` base class: wrap any renderer behind the bridge protocol.

A studio subclasses :class:`Server` and implements two methods, :meth:`Server.describe` and
:meth:`Server.render`; the base class owns the socket, decodes and validates every request
(version, op, sizes, parameter names and bounds), turns every failure into an error reply and
keeps serving. Nothing received is unpickled or executed.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import protocol as P
from .endpoints import check_endpoint


class Server:
    """Serve one renderer on one ZeroMQ REP socket.

    Subclasses implement :meth:`describe` and :meth:`render`. ``describe()`` returns a dict
    with ``params`` (a :class:`rendergrad.ParamSpace` or the JSON schema list), ``image``
    (``{"height", "width", "channels"}``) and optionally ``light_parameters`` and ``name``.
    ``render(params)`` receives ``[batch, n]`` float64 already checked against the bounds
    (discrete parameters rounded) and returns ``[batch, H, W, C]`` float32 linear, top row
    first. Accept a ``seeds`` keyword to receive one seed per image (for path tracers).
    """

    name: str = "server"

    # -- to implement ------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def render(self, params: np.ndarray, seeds: list[int] | None = None) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the renderer (called once when serving ends)."""

    # -- machinery -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        from rendergrad import ParamSpace
        d = dict(self.describe())
        params = d.get("params")
        space = params if isinstance(params, ParamSpace) else P.schema_to_space(params)
        image = d.get("image") or {}
        try:
            h, w, c = int(image["height"]), int(image["width"]), int(image["channels"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("describe() must return image = {'height': H, 'width': W, 'channels': C}") from None
        self._space = space
        self._image_shape = (h, w, c)
        lights = [str(x) for x in d.get("light_parameters", [])]
        unknown = [x for x in lights if x not in space]
        if unknown:
            raise ValueError(f"describe(): light_parameters {unknown} are not parameters")
        self._description = {
            "name": str(d.get("name", self.name)),
            "params": space.describe(),
            "image": {"height": h, "width": w, "channels": c},
            "light_parameters": lights,
            "differentiable": False,
        }
        self._lo = space.low.numpy()
        self._hi = space.high.numpy()
        self._discrete = space.discrete_mask().numpy()
        try:
            self._takes_seeds = "seeds" in inspect.signature(self.render).parameters
        except (TypeError, ValueError):  # pragma: no cover
            self._takes_seeds = False

    def handle(self, frames: Sequence[bytes]) -> list[Any]:
        """One request → one reply. Never raises: every failure is an error reply."""
        try:
            req = P.decode_request(frames, max_message_bytes=self.max_message_bytes)
        except P.ProtocolError as e:
            return P.encode_error(P.peek_id(frames), e.code, e.message)
        except Exception as e:  # pragma: no cover - decode is total, but a server must not die
            return P.encode_error(P.peek_id(frames), P.E_INTERNAL, f"{type(e).__name__}: {e}")
        try:
            return self._dispatch(req)
        except P.ProtocolError as e:
            return P.encode_error(req.id, e.code, e.message, req.op)
        except Exception as e:
            code = P.E_RENDER_FAILED if req.op == "render" else P.E_INTERNAL
            return P.encode_error(req.id, code, f"{type(e).__name__}: {e}", req.op)

    def _dispatch(self, req: P.Request) -> list[Any]:
        if req.op == "hello":
            versions = req.header.get("versions", [P.PROTOCOL_VERSION])
            if not isinstance(versions, list) or P.PROTOCOL_VERSION not in versions:
                raise P.ProtocolError(P.E_BAD_VERSION, f"client speaks versions {versions!r}; this server "
                                                       f"speaks {list(P.SUPPORTED_VERSIONS)}")
            return P.encode_reply("hello", req.id, {
                "version": P.PROTOCOL_VERSION, "server": self._description["name"],
                "capabilities": {"ops": list(P.OPS), "seeds": self._takes_seeds,
                                 "max_message_bytes": self.max_message_bytes,
                                 "max_batch": self.max_batch, "image_dtype": "float32"},
                "pid": os.getpid()})
        if req.op == "describe":
            return P.encode_reply("describe", req.id, self._description)
        if req.op == "ping":
            return P.encode_reply("ping", req.id, {"time": time.time()})
        if req.op == "shutdown":
            self._stop = True
            return P.encode_reply("shutdown", req.id, {})
        return self._render(req)

    def _render(self, req: P.Request) -> list[Any]:
        params = req.params
        assert params is not None
        n = self._space.size
        if req.names is not None and req.names != self._space.names:
            undeclared = [x for x in req.names if x not in self._space]
            if undeclared:
                raise P.ProtocolError(P.E_UNKNOWN_PARAMETER, f"parameters {undeclared} are not declared by this "
                                      f"scene; declared: {', '.join(self._space.names) or '(none)'}")
            raise P.ProtocolError(P.E_BAD_REQUEST, f"names must list the declared parameters in order "
                                                   f"{self._space.names}, got {req.names}")
        if params.shape[1] != n:
            raise P.ProtocolError(P.E_BAD_REQUEST, f"this scene has {n} parameter values per image "
                                                   f"({', '.join(self._space.names)}); got n={params.shape[1]}")
        if params.shape[0] > self.max_batch:
            raise P.ProtocolError(P.E_TOO_LARGE, f"batch {params.shape[0]} exceeds this server's max_batch "
                                                 f"{self.max_batch}")
        reply_bytes = params.shape[0] * int(np.prod(self._image_shape)) * 4
        if reply_bytes > self.max_message_bytes:
            raise P.ProtocolError(P.E_TOO_LARGE, f"the reply would be {reply_bytes} bytes, over the "
                                                 f"{self.max_message_bytes} limit; send smaller batches")
        # Exact: low <= value <= high with no tolerance, as docs/bridge-protocol.md specifies.
        bad = (params < self._lo) | (params > self._hi)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise P.ProtocolError(P.E_OUT_OF_BOUNDS, f"theta[{row}, {col}] ({self._space.coordinate_name(col)}) = "
                                  f"{params[row, col]!r} is outside [{self._lo[col]!r}, {self._hi[col]!r}]")
        params = np.where(self._discrete, np.round(params), params)
        out = self.render(params, seeds=req.seeds) if self._takes_seeds else self.render(params)
        out = np.asarray(out, dtype=np.float32)
        want = (params.shape[0], *self._image_shape)
        if out.shape != want:
            raise RuntimeError(f"render() returned shape {out.shape}; describe() promised {want}")
        return P.encode_reply("render", req.id, {}, images=out)

    def serve(self, endpoint: str = "tcp://127.0.0.1:5555", *, allow_remote: bool = False,
              ready_file: str | os.PathLike | None = None, max_message_bytes: int = P.DEFAULT_MAX_MESSAGE_BYTES,
              max_batch: int = 1024, exit_with_parent: bool = False,
              curve_secret_key: bytes | None = None) -> None:
        """Bind ``endpoint`` and answer requests until ``shutdown``, SIGTERM or SIGINT.

        Binds to loopback or ipc:// only unless ``allow_remote``. ``tcp://127.0.0.1:*`` picks a
        free port; the bound endpoint is written to ``ready_file`` (atomically) once the socket
        is listening. ``curve_secret_key`` (a Z85 secret key) turns on CURVE encryption and
        authentication (see docs/bridge-protocol.md).
        """
        import zmq
        check_endpoint(endpoint, allow_remote=allow_remote)
        self.max_message_bytes = int(max_message_bytes)
        self.max_batch = int(max_batch)
        self._stop = False
        self._prepare()
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 500)
        # A hard cap far above the soft limit: ZeroMQ drops a peer that sends a bigger frame
        # before it is buffered; anything between the two gets a too_large error reply.
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * self.max_message_bytes + P.MAX_HEADER_BYTES)
        if curve_secret_key is not None:
            sock.curve_secretkey = curve_secret_key
            sock.curve_server = True
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            sock.close(0)
            ctx.term()
            from rendergrad.errors import ConfigError
            raise ConfigError(f"bridge server cannot listen on {endpoint}: {e.strerror}; pick another endpoint "
                              "(tcp://127.0.0.1:* takes a free port) or stop what is using it") from None
        bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        parent = os.getppid()
        old = {}

        def _stop(signum, frame):  # noqa: ARG001
            self._stop = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old[sig] = signal.signal(sig, _stop)
            except ValueError:  # not the main thread (tests serving from a thread)
                pass
        if ready_file is not None:
            tmp = Path(f"{ready_file}.tmp")
            tmp.write_text(bound + "\n")
            os.replace(tmp, ready_file)
        print(f"rendergrad bridge: serving {self._description['name']!r} on {bound}", file=sys.stderr, flush=True)
        self.endpoint = bound
        try:
            while not self._stop:
                if exit_with_parent and os.getppid() != parent:
                    break
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart(copy=False)
                reply = self.handle([f.buffer for f in frames])
                sock.send_multipart(reply, copy=False)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            sock.close(linger=500)
            ctx.term()
            self.close()


class RendererServer(Server):
    """Serve an in-process :class:`rendergrad.Renderer` (toy, mitsuba, ...) over the bridge.

    Useful to move a heavy renderer into its own process or onto another machine, and to test
    the bridge without Blender.
    """

    def __init__(self, renderer: Any):
        self.renderer = renderer
        self.name = renderer.name
        self._space = renderer.parameter_space()
        import torch
        probe = renderer.render(self._space.initial_theta().unsqueeze(0))
        self._shape = tuple(int(s) for s in np.asarray(probe.detach() if hasattr(probe, "detach") else probe).shape[1:])

    def describe(self) -> dict[str, Any]:
        h, w, c = self._shape
        return {"name": self.renderer.name, "params": self._space,
                "image": {"height": h, "width": w, "channels": c},
                "light_parameters": list(self.renderer.light_parameters())}

    def render(self, params: np.ndarray) -> np.ndarray:
        import torch
        with torch.no_grad():
            out = self.renderer.render(torch.from_numpy(np.ascontiguousarray(params, dtype=np.float64)))
        return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)

    def close(self) -> None:
        self.renderer.close()
