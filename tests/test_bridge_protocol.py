"""The bridge wire format and the Server base class's request handling (no sockets here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zmq")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from rendergrad import Param, ParamSpace  # noqa: E402
from rendergrad.renderers.bridge import protocol as P  # noqa: E402
from rendergrad.renderers.bridge.server import Server  # noqa: E402


class GradientServer(Server):
    """Image = a horizontal ramp scaled by `gain`, plus `offset`; count is an integer."""

    name = "ramp"

    def describe(self):
        return {"params": ParamSpace([Param("gain", 0.0, 2.0, 1.0), Param("offset", -1.0, 1.0, 0.0),
                                      Param("count", 1, 5, 2, kind="integer")]),
                "image": {"height": 4, "width": 6, "channels": 2}, "light_parameters": ["gain"]}

    def render(self, params, seeds=None):
        self.last = (params.copy(), seeds)
        ramp = np.linspace(0, 1, 6, dtype=np.float32)
        out = np.empty((params.shape[0], 4, 6, 2), np.float32)
        for i, (g, o, c) in enumerate(params):
            out[i] = (g * ramp + o + c)[None, :, None]
        return out


@pytest.fixture()
def server():
    s = GradientServer()
    s.max_message_bytes, s.max_batch = 64 * 1024, 16
    s._prepare()
    return s


def _frames(msg):
    return [bytes(f) for f in msg]


def test_render_roundtrip_is_exact_and_ordered(server):
    params = np.array([[0.5, 0.1, 2.0], [1.5, -0.2, 4.6]])
    req = _frames(P.encode_request("render", 9, params=params, seeds=[3, 4], names=["gain", "offset", "count"]))
    rep = P.decode_reply(_frames(server.handle(req)))
    assert rep.ok and rep.id == 9 and rep.images.dtype == np.float32
    ramp = np.linspace(0, 1, 6, dtype=np.float32)
    np.testing.assert_array_equal(rep.images[0, 2, :, 1], 0.5 * ramp + 0.1 + 2.0)
    # the integer parameter arrives rounded, seeds arrive as sent
    assert server.last[0][1, 2] == 5.0 and server.last[1] == [3, 4]
    np.testing.assert_allclose(rep.images[1, 0, :, 0], 1.5 * ramp - 0.2 + 5.0, rtol=1e-6)


def test_hello_and_describe(server):
    rep = P.decode_reply(_frames(server.handle(_frames(P.encode_request("hello", "a", extra={"versions": [1]})))))
    assert rep.ok and rep.header["version"] == 1 and rep.header["capabilities"]["seeds"] is True
    d = P.decode_reply(_frames(server.handle(_frames(P.encode_request("describe", 2))))).header
    space = P.schema_to_space(d["params"])
    assert space.names == ["gain", "offset", "count"] and space["count"].kind == "integer"
    assert d["image"] == {"height": 4, "width": 6, "channels": 2} and d["light_parameters"] == ["gain"]


@pytest.mark.parametrize("frames, code", [
    ([b"not json"], P.E_BAD_MESSAGE),
    ([b"[1, 2]"], P.E_BAD_MESSAGE),
    ([b"\xff\xfe"], P.E_BAD_MESSAGE),
    ([json.dumps({"v": 2, "op": "ping", "id": 1}).encode()], P.E_BAD_VERSION),
    ([json.dumps({"op": "ping", "id": 1}).encode()], P.E_BAD_VERSION),
    ([json.dumps({"v": 1, "op": "hello", "id": 1, "versions": [7]}).encode()], P.E_BAD_VERSION),
    ([json.dumps({"v": 1, "op": "exec", "id": 1}).encode()], P.E_UNKNOWN_OP),
    ([json.dumps({"v": 1, "op": "render", "id": 1, "batch": 1, "n": 3}).encode()], P.E_BAD_REQUEST),
    ([json.dumps({"v": 1, "op": "render", "id": 1, "batch": 1, "n": 3}).encode(), b"\0" * 23], P.E_BAD_REQUEST),
    ([json.dumps({"v": 1, "op": "render", "id": 1, "batch": 1, "n": 2}).encode(), b"\0" * 16], P.E_BAD_REQUEST),
    ([json.dumps({"v": 1, "op": "render", "id": 1, "batch": 1, "n": 3}).encode(), b"\0" * 70000], P.E_TOO_LARGE),
    ([json.dumps({"v": 1, "op": "render", "id": 1, "batch": 17, "n": 3}).encode(), b"\0" * (17 * 24)],
     P.E_TOO_LARGE),
    ([json.dumps({"v": 1, "op": "ping", "id": {"nested": 1}}).encode()], P.E_BAD_REQUEST),
])
def test_malformed_requests_get_error_replies(server, frames, code):
    rep = P.decode_reply(_frames(server.handle(frames)))
    assert not rep.ok and rep.code == code, rep.message
    assert rep.message


def test_undeclared_parameter_is_refused(server):
    req = P.encode_request("render", 5, params=np.array([[1.0, 0.0, 2.0]]), names=["gain", "offset", "radius"])
    rep = P.decode_reply(_frames(server.handle(_frames(req))))
    assert rep.code == P.E_UNKNOWN_PARAMETER and "radius" in rep.message and rep.id == 5


@pytest.mark.parametrize("row, name", [([2.5, 0.0, 2.0], "gain"), ([1.0, 0.0, 9.0], "count"),
                                        ([np.nan, 0.0, 2.0], None)])
def test_out_of_bounds_is_refused_naming_the_parameter(server, row, name):
    req = P.encode_request("render", 1, params=np.array([row]))
    rep = P.decode_reply(_frames(server.handle(_frames(req))))
    assert rep.code == P.E_OUT_OF_BOUNDS
    if name:
        assert name in rep.message


def test_a_failing_render_is_an_error_reply_not_a_crash(server):
    def boom(params, seeds=None):
        raise RuntimeError("scene exploded")
    server.render = boom
    rep = P.decode_reply(_frames(server.handle(_frames(P.encode_request("render", 1, params=np.ones((1, 3)))))))
    assert rep.code == P.E_RENDER_FAILED and "scene exploded" in rep.message


def test_wrong_image_shape_from_render_is_reported(server):
    server.render = lambda params, seeds=None: np.zeros((params.shape[0], 3, 3, 2), np.float32)
    rep = P.decode_reply(_frames(server.handle(_frames(P.encode_request("render", 1, params=np.ones((1, 3)))))))
    assert rep.code == P.E_RENDER_FAILED and "(1, 4, 6, 2)" in rep.message


def test_client_side_reply_validation():
    good = _frames(P.encode_reply("render", 1, {}, images=np.zeros((2, 2, 2, 3), np.float32)))
    assert P.decode_reply(good).images.shape == (2, 2, 2, 3)
    with pytest.raises(P.ProtocolError):
        P.decode_reply(good[:2])                     # one image frame missing
    with pytest.raises(P.ProtocolError):
        P.decode_reply([good[0], good[1], good[2][:-4]])  # truncated image
    with pytest.raises(P.ProtocolError):
        P.decode_reply([b'{"v": 9, "ok": true}'])


# -- property-based: whatever arrives, the server answers with a well-formed reply -----------
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 60, 2 ** 60), st.floats(allow_nan=False),
                          st.text(max_size=20))
_headers = st.fixed_dictionaries(
    {}, optional={"v": st.one_of(st.just(1), _json_scalars), "op": st.one_of(st.sampled_from(P.OPS), _json_scalars),
                  "id": _json_scalars, "batch": st.one_of(st.integers(-2, 20), _json_scalars),
                  "n": st.one_of(st.integers(-2, 5), _json_scalars),
                  "seeds": st.one_of(st.lists(st.integers(-5, 2 ** 32), max_size=4), _json_scalars),
                  "names": st.one_of(st.lists(st.text(max_size=8), max_size=4), _json_scalars),
                  "versions": st.one_of(st.lists(st.integers(0, 3), max_size=3), _json_scalars)})
messages = st.one_of(
    st.lists(st.binary(max_size=200), min_size=1, max_size=4),
    st.tuples(_headers, st.lists(st.binary(max_size=120), max_size=3)).map(
        lambda t: [json.dumps(t[0]).encode(), *t[1]]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=messages)
def test_fuzzed_messages_always_get_a_well_formed_reply(server, frames):
    rep = P.decode_reply(_frames(server.handle(frames)))
    if not rep.ok:
        assert rep.code in P.ERROR_CODES and rep.message
