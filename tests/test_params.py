import math

import pytest
import torch

from rendergrad import Param, ParamSpace
from rendergrad.errors import ConfigError, ParameterError


def space():
    return ParamSpace([
        Param("x", low=-2.0, high=2.0, init=1.0),
        Param("power", low=0.1, high=1000.0, init=10.0, log=True),
        Param("count", low=1, high=9, init=3, kind="integer"),
        Param("mode", kind="categorical", choices=["a", "b", "c"], init="b"),
        Param("albedo", shape=(3,), low=0.0, high=1.0, init=[0.1, 0.2, 0.3], sigma_scale=0.5),
    ])


def test_sizes_names_and_slices():
    s = space()
    assert s.size == 7 and s.names == ["x", "power", "count", "mode", "albedo"]
    assert s.slice("albedo") == slice(4, 7)
    assert s.coordinate_name(5) == "albedo[1]"
    assert s.sigma_scales().tolist() == [1, 1, 1, 1, 0.5, 0.5, 0.5]


def test_unit_round_trip_and_log_scale():
    s = space()
    theta = s.initial_theta()
    u = s.to_unit(theta)
    assert torch.all((u >= 0) & (u <= 1))
    assert torch.allclose(s.to_theta(u), theta, atol=1e-9)
    # log scale: the middle of u is the geometric mean of the bounds
    mid = s.to_theta(torch.full((7,), 0.5, dtype=torch.float64))
    assert math.isclose(float(mid[1]), math.sqrt(0.1 * 1000.0), rel_tol=1e-9)


def test_discrete_rounding_is_straight_through():
    s = space()
    u = s.initial_unit().clone().requires_grad_(True)
    u2 = u.detach().clone()
    u2[2] = (3.4 - 1) / 8  # count 3.4 -> rounds to 3
    u2.requires_grad_(True)
    theta = s.to_theta(u2)
    assert float(theta[2].detach()) == 3.0
    theta[2].backward()
    assert float(u2.grad[2]) == pytest.approx(8.0)  # gradient passes through the rounding


def test_decode_gives_people_values():
    d = space().decode(space().initial_theta())
    assert d == {"x": 1.0, "power": pytest.approx(10.0), "count": 3, "mode": "b", "albedo": pytest.approx([0.1, 0.2, 0.3])}


def test_flatten_errors_name_the_problem():
    s = space()
    with pytest.raises(ParameterError, match="unknown parameter 'y'.*valid names are: x, power"):
        s.flatten({"y": 1.0}, what="target.params")
    with pytest.raises(ParameterError, match="x = 5 lies outside its bounds \\[-2, 2\\]"):
        s.flatten({"x": 5.0})
    with pytest.raises(ParameterError, match="not one of"):
        s.flatten({"mode": "z"})
    assert s.flatten({"mode": "c"})[3] == 2.0


@pytest.mark.parametrize("kw, msg", [
    ({"low": 1.0, "high": 0.0}, "bounds reversed"),
    ({"low": 0.0, "high": 1.0, "init": 2.0}, "outside its bounds"),
    ({"low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
    ({"kind": "fancy"}, "kind 'fancy'"),
    ({"kind": "categorical"}, "needs a non-empty `choices`"),
    ({"shape": (2,), "init": [0.1, 0.2, 0.3]}, "expected 1 or 2 values"),
])
def test_bad_declarations(kw, msg):
    with pytest.raises(ParameterError, match=msg):
        Param("p", **kw)


def test_duplicate_names_and_config_keys():
    with pytest.raises(ParameterError, match="duplicate"):
        ParamSpace([Param("a"), Param("a")])
    with pytest.raises(ConfigError, match="unknown key.*'hihg'.*did you mean 'high'"):
        ParamSpace.from_config([{"name": "a", "hihg": 2}])


def test_check_theta_reports_coordinate():
    s = space()
    bad = s.initial_theta().clone()
    bad[6] = 1.5
    with pytest.raises(ParameterError, match=r"albedo\[2\] = 1.5"):
        s.check_theta(bad)
