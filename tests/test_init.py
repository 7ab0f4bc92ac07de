"""Initialisers: empirical spread against ``init_std`` and against the formulas of survey §2.2.1,
the bounds of the uniform ones, orthogonality, ``torch.nn.init`` equivalents, and ``initialize``."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unstable_gradients.activations import PReLU
from unstable_gradients.init import INITIALIZERS, fans, init_std, initialize

# Tolerance on an empirical std: the sample std of N iid draws has a relative standard error of
# about 1/sqrt(2N) (normal) or less (uniform). With N >= 73,728 that is <= 0.26%, so 3% is more
# than 10 standard errors: the tests cannot fail by chance, yet catch any wrong factor
# (the closest wrong formulas, e.g. fan_in vs fan_out here, differ by >= 15%).
REL_TOL = 0.03

SHAPES = {"linear400x300": (400, 300), "conv64x32x3x3": (64, 32, 3, 3)}
# fan_in, fan_out computed by hand: (out, in) -> in, out; (out, in, kh, kw) -> in*kh*kw, out*kh*kw
FANS = {(400, 300): (300, 400), (64, 32, 3, 3): (32 * 9, 64 * 9)}


def expected_std(name: str, shape, **kw) -> float:
    """The survey's formulas, written out independently of the package."""
    fi, fo = FANS[shape]
    gain = kw.get("gain", 1.0)
    s = kw.get("negative_slope", 0.0)
    fan = fi if kw.get("mode", "fan_in") == "fan_in" else fo
    rows, cols = shape[0], math.prod(shape[1:])
    return {
        "standard_uniform": 1 / math.sqrt(3 * fi),  # U[-1/sqrt(n), 1/sqrt(n)]: var = 1/(3n)
        "xavier_uniform": gain * math.sqrt(2 / (fi + fo)),
        "xavier_normal": gain * math.sqrt(2 / (fi + fo)),
        "he_uniform": math.sqrt(2 / ((1 + s**2) * fan)),
        "he_normal": math.sqrt(2 / ((1 + s**2) * fan)),
        "lecun_normal": 1 / math.sqrt(fi),
        # sum of squares of a semi-orthogonal matrix = gain^2 * min(rows, cols)
        "orthogonal": gain / math.sqrt(max(rows, cols)),
        "normal": kw.get("std", 1.0),
    }[name]


def expected_bound(name: str, shape, **kw) -> float:
    fi, fo = FANS[shape]
    s = kw.get("negative_slope", 0.0)
    fan = fi if kw.get("mode", "fan_in") == "fan_in" else fo
    return {
        "standard_uniform": 1 / math.sqrt(fi),
        "xavier_uniform": kw.get("gain", 1.0) * math.sqrt(6 / (fi + fo)),
        "he_uniform": math.sqrt(6 / ((1 + s**2) * fan)),
    }[name]


CASES = [(name, {}) for name in INITIALIZERS] + [
    ("xavier_uniform", dict(gain=2.0)),
    ("xavier_normal", dict(gain=0.5)),
    ("he_uniform", dict(mode="fan_out")),
    ("he_uniform", dict(negative_slope=0.2)),
    ("he_normal", dict(mode="fan_out")),
    ("he_normal", dict(negative_slope=0.2)),
    ("he_normal", dict(mode="fan_out", negative_slope=1.0)),
    ("orthogonal", dict(gain=2.0)),
    ("normal", dict(std=0.3)),
]
UNIFORM = ("standard_uniform", "xavier_uniform", "he_uniform")


def _case_id(name, kw):
    return name + "".join(f"[{k}={v}]" for k, v in kw.items())


PARAMS = [
    pytest.param(name, kw, shape, id=f"{_case_id(name, kw)}-{sid}")
    for name, kw in CASES
    for sid, shape in SHAPES.items()
]


def _draw(name, shape, seed=0, **kw):
    w = torch.empty(shape)
    out = INITIALIZERS[name](w, generator=torch.Generator().manual_seed(seed), **kw)
    assert out is w  # in place, returns its argument
    return w


def test_cases_cover_every_initializer():
    assert {name for name, _ in CASES} == set(INITIALIZERS)


@pytest.mark.parametrize("shape,expected", list(FANS.items()), ids=list(SHAPES))
def test_fans(shape, expected):
    assert fans(torch.empty(shape)) == expected


@pytest.mark.parametrize("name,kw,shape", PARAMS)
def test_empirical_std_matches_formula_and_init_std(name, kw, shape):
    w = _draw(name, shape, **kw)
    formula = expected_std(name, shape, **kw)
    assert init_std(name, shape, **kw) == pytest.approx(formula, rel=1e-12)
    assert w.std().item() == pytest.approx(formula, rel=REL_TOL)
    # zero-mean (|mean| well under the std; standard error of the mean is std/sqrt(N) ~ std/270)
    assert abs(w.mean().item()) < 0.02 * formula


@pytest.mark.parametrize(
    "name,kw,shape", [p for p in PARAMS if p.values[0] in UNIFORM]
)
def test_uniform_initializers_respect_their_bound(name, kw, shape):
    w = _draw(name, shape, **kw)
    bound = expected_bound(name, shape, **kw)
    m = w.abs().max().item()
    # with >= 73,728 draws the largest |w| is within 0.1% of the bound (P(miss) < e^-70)
    assert bound * 0.999 < m <= bound * (1 + 1e-6)


@pytest.mark.parametrize("gain", [1.0, 2.0], ids=["gain1", "gain2"])
@pytest.mark.parametrize(
    "shape", [(300, 400), (400, 300), (64, 32, 3, 3), (64, 4, 3, 3)],
    ids=["wide", "tall", "conv_wide", "conv_tall"],
)
def test_orthogonal_is_semi_orthogonal(shape, gain):
    w = _draw("orthogonal", shape, gain=gain).double()
    flat = w.reshape(shape[0], -1)
    rows, cols = flat.shape
    gram = flat @ flat.T if rows <= cols else flat.T @ flat
    torch.testing.assert_close(gram, gain**2 * torch.eye(min(rows, cols), dtype=torch.float64), atol=2e-5, rtol=0)


def test_orthogonal_rejects_vectors():
    with pytest.raises(ValueError):
        INITIALIZERS["orthogonal"](torch.empty(5))


def test_normal_mean_and_negative_std():
    w = _draw("normal", (400, 300), std=0.1, mean=2.0)
    assert w.mean().item() == pytest.approx(2.0, abs=0.01)
    assert w.std().item() == pytest.approx(0.1, rel=REL_TOL)
    with pytest.raises(ValueError):
        INITIALIZERS["normal"](torch.empty(3, 3), std=-1.0)


@pytest.mark.parametrize("name", ["he_normal", "he_uniform"])
def test_he_rejects_unknown_mode(name):
    with pytest.raises(ValueError, match="fan_in"):
        INITIALIZERS[name](torch.empty(3, 3), mode="fan_avg")


# torch.nn.init counterparts: (our name, our kwargs, torch function)
TORCH_EQUIVALENTS = [
    ("standard_uniform", {}, lambda w, fi: nn.init.uniform_(w, -1 / math.sqrt(fi), 1 / math.sqrt(fi))),
    ("xavier_uniform", {}, lambda w, fi: nn.init.xavier_uniform_(w)),
    ("xavier_uniform", dict(gain=2.0), lambda w, fi: nn.init.xavier_uniform_(w, gain=2.0)),
    ("xavier_normal", {}, lambda w, fi: nn.init.xavier_normal_(w)),
    ("he_uniform", {}, lambda w, fi: nn.init.kaiming_uniform_(w, a=0, nonlinearity="relu")),
    ("he_uniform", dict(negative_slope=0.2, mode="fan_out"),
     lambda w, fi: nn.init.kaiming_uniform_(w, a=0.2, mode="fan_out", nonlinearity="leaky_relu")),
    ("he_normal", {}, lambda w, fi: nn.init.kaiming_normal_(w, nonlinearity="relu")),
    ("he_normal", dict(mode="fan_out"), lambda w, fi: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")),
    ("he_normal", dict(negative_slope=0.2),
     lambda w, fi: nn.init.kaiming_normal_(w, a=0.2, nonlinearity="leaky_relu")),
    ("lecun_normal", {}, lambda w, fi: nn.init.kaiming_normal_(w, nonlinearity="linear")),
    ("orthogonal", {}, lambda w, fi: nn.init.orthogonal_(w)),
    ("orthogonal", dict(gain=2.0), lambda w, fi: nn.init.orthogonal_(w, gain=2.0)),
    ("normal", dict(std=0.3), lambda w, fi: nn.init.normal_(w, std=0.3)),
]


@pytest.mark.parametrize(
    "name,kw,torch_init,shape",
    [
        pytest.param(n, k, f, s, id=f"{_case_id(n, k)}-{sid}")
        for n, k, f in TORCH_EQUIVALENTS
        for sid, s in SHAPES.items()
    ],
)
def test_std_matches_torch_nn_init(name, kw, torch_init, shape):
    ours = _draw(name, shape, **kw)
    ref = torch.empty(shape)
    torch_init(ref, FANS[shape][0])
    assert ours.std().item() == pytest.approx(ref.std().item(), rel=REL_TOL)
    if name in UNIFORM:
        assert ours.abs().max().item() == pytest.approx(ref.abs().max().item(), rel=2e-3)


def test_init_std_unknown_name_raises():
    with pytest.raises(ValueError, match="valid names"):
        init_std("glorot", (3, 3))


# ---------------------------------------------------------------------------------------------
# initialize(module, ...)
# ---------------------------------------------------------------------------------------------


def _net(wide: int = 40) -> nn.Module:
    return nn.Sequential(nn.Linear(200, 300), PReLU(), nn.Linear(300, wide), nn.Conv2d(3, 4, 3))


def test_initialize_sets_weights_and_zeroes_biases_by_default():
    net = _net()
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if n.endswith("bias"))  # torch's default
    out = initialize(net, "he_normal", generator=torch.Generator().manual_seed(0))
    assert out is net
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
    assert net[0].weight.std().item() == pytest.approx(math.sqrt(2 / 200), rel=REL_TOL)  # 60,000 draws
    assert net[3].weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.5)  # only 108 draws


def test_initialize_constant_bias():
    net = initialize(_net(), "xavier_uniform", bias=0.1)
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == torch.tensor(0.1)), name


def test_initialize_bias_std_draws_gaussian_biases():
    net = initialize(_net(wide=10000), "lecun_normal", bias_std=0.5, generator=torch.Generator().manual_seed(1))
    b = net[2].bias  # 10,000 biases: std of the sample std ~ 0.7%
    assert b.std().item() == pytest.approx(0.5, rel=REL_TOL)
    assert abs(b.mean().item()) < 0.02


def test_initialize_leaves_other_vector_parameters_alone():
    net = _net()
    with torch.no_grad():
        net[1].weight.fill_(0.37)
    initialize(net, "normal", std=1.0, bias_std=1.0)
    assert net[1].weight.item() == pytest.approx(0.37)
    initialize(net, "orthogonal")
    assert net[1].weight.item() == pytest.approx(0.37)


def test_initialize_passes_kwargs_to_the_initializer():
    net = initialize(nn.Linear(300, 400), "he_normal", mode="fan_out", negative_slope=1.0,
                     generator=torch.Generator().manual_seed(0))
    assert net.weight.std().item() == pytest.approx(math.sqrt(1 / 400), rel=REL_TOL)


def test_initialize_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        initialize(nn.Linear(3, 3), "kaiming_fancy")
    for name in INITIALIZERS:
        assert name in str(err.value)


def test_initialize_wrong_kwarg_raises_type_error():
    with pytest.raises(TypeError, match="lecun_normal"):
        initialize(nn.Linear(3, 3), "lecun_normal", gain=2.0)


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_initialize_is_reproducible_with_a_generator(name):
    a, b, c = _net(), _net(), _net()
    initialize(a, name, bias_std=0.1, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(999)  # the global RNG must not matter
    initialize(b, name, bias_std=0.1, generator=torch.Generator().manual_seed(7))
    initialize(c, name, bias_std=0.1, generator=torch.Generator().manual_seed(8))
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), n
        if n.endswith("bias") or pa.dim() >= 2:
            assert not torch.equal(pa, pc), n
