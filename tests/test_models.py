"""Models registry: shapes, configs, resolution transfer, errors."""

import math

import pytest
import torch

from kryflow.models import (
    MODELS, FNO, ModeMixing, build_model, matched_width, model_config, model_from_config, model_parameters,
    parameter_count, resolution_divisor,
)

TINY = {
    "fno": {"width": 6, "modes": 3, "layers": 2, "projection_width": 8},
    "unet": {"width": 4, "depth": 2},
    "resnet": {"width": 6, "blocks": 1, "dilations": [1, 2]},
    "sinenet": {"width": 4, "waves": 2, "depth": 2},
    "neuralop_fno": {"n_modes": 4, "hidden_channels": 6, "n_layers": 2},
    "neuralop_tfno": {"n_modes": 4, "hidden_channels": 6, "n_layers": 2},
    "neuralop_uno": {"hidden_channels": 6, "lifting_channels": 6, "projection_channels": 6,
                     "uno_out_channels": [6, 6, 6], "uno_n_modes": [4, 3, 4], "uno_scalings": [0.5, 1.0, 2.0]},
}


def _built(name: str) -> str:
    """The registry name as a test parameter, skipped where its optional package is absent."""
    from kryflow.models._neuralop import neuralop_available

    if name.startswith("neuralop_") and not neuralop_available():
        reason = 'neuraloperator not installed (optional extra: pip install -e ".[neuralop]")'
        return pytest.param(name, marks=pytest.mark.skip(reason=reason))
    return name


BUILT = [_built(n) for n in sorted(MODELS)]


def test_every_registered_model_has_a_tiny_config():
    assert set(MODELS) == set(TINY), "add a TINY entry (and so tests) for every registered model"


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("name", BUILT)
def test_shapes(name, dim):
    torch.manual_seed(0)
    model = build_model(name, in_channels=2, out_channels=3, dim=dim, **TINY[name])
    x = torch.randn(2, 2, *(8,) * dim)
    y = model(x)
    assert y.shape == (2, 3, *(8,) * dim) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", BUILT)
def test_config_round_trip(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, out_channels=1, dim=2, **TINY[name])
    config = model_config(model)
    assert config["name"] == name and config["dim"] == 2
    clone = model_from_config(config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(clone(x), model(x))
    assert set(model_parameters(name)) == set(config) - {"name", "in_channels", "out_channels", "dim"}


def test_fno_spectral_weights_are_real_with_trailing_two():
    model = build_model("fno", in_channels=1, out_channels=1, dim=3, **TINY["fno"])
    mixers = [m for m in model.modules() if isinstance(m, ModeMixing)]
    assert mixers
    for m in mixers:
        assert not m.weight.is_complex() and m.weight.shape[-1] == 2
    assert not any(p.is_complex() for p in model.parameters())


def test_fno_resolution_transfer():
    """Same continuous input sampled at n and 2n: outputs agree at the shared nodes."""
    torch.manual_seed(0)
    model = FNO(1, 1, 2, width=8, modes=4, layers=2, projection_width=8)

    def field(n):
        t = torch.arange(n) / n
        xx, yy = torch.meshgrid(t, t, indexing="ij")
        return (torch.sin(2 * math.pi * xx) * torch.cos(2 * math.pi * yy))[None, None]

    coarse, fine = model(field(32)), model(field(64))
    err = (fine[..., ::2, ::2] - coarse).norm() / coarse.norm()
    assert err < 0.05, err


def test_fno_coarse_grid_with_many_modes():
    model = build_model("fno", in_channels=1, out_channels=1, dim=2, modes=12, width=4, layers=1)
    assert model(torch.randn(1, 1, 6, 6)).shape == (1, 1, 6, 6)


def test_resolution_divisor():
    assert resolution_divisor("unet", depth=3) == 8
    assert resolution_divisor("unet") == 2 ** model_parameters("unet")["depth"]
    assert resolution_divisor("fno") == 1 and resolution_divisor("resnet") == 1
    assert resolution_divisor("sinenet", depth=2) == 4


def test_unet_rejects_indivisible_grid():
    model = build_model("unet", in_channels=1, out_channels=1, dim=2, width=4, depth=2)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 10, 10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "transformer"}, "valid models"),
        ({"name": "fno", "widht": 3}, "valid"),
        ({"name": "fno", "dim": 4}, "dim must be 2 or 3"),
        ({"name": "fno", "modes": [4, 4, 4]}, "modes"),
        ({"name": "unet", "depth": 0}, "depth"),
        ({"name": "resnet", "dilations": []}, "dilations"),
        ({"name": "sinenet", "waves": 0}, "waves"),
        ({"name": "sinenet", "padding": "reflect"}, "padding"),
        ({"name": "sinenet", "interpolation": "cubic", "dim": 3}, "2D only"),
        ({"name": "sinenet", "multiplier": 0.01}, "multiplier"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    dim = kwargs.pop("dim", 2)
    with pytest.raises(ValueError, match=match):
        build_model(name, in_channels=1, out_channels=1, dim=dim, **kwargs)
    if name not in MODELS:
        with pytest.raises(ValueError, match="valid models"):
            model_parameters(name)


def test_sinenet_waves_add_to_the_latent_state():
    """A wave whose output is zero leaves the state as it is: the residual per wave."""
    torch.manual_seed(0)
    net = build_model("sinenet", in_channels=3, out_channels=2, dim=2, width=4, waves=3, depth=2)
    x = torch.randn(2, 3, 8, 8)
    for wave in net.waves:
        for stage in wave.up[:1]:  # the last stage of a wave writes its output
            for p in stage.parameters():
                torch.nn.init.zeros_(p)
    torch.testing.assert_close(net(x), net.project(net.lift(x)))


def test_sinenet_one_wave_is_a_unet_of_the_same_size():
    """One wave with channels doubling per level has a U-Net's parameters (up to the disentangled
    inputs and residual projections): SineNet's cost is its number of waves."""
    kw = {"in_channels": 4, "out_channels": 1, "dim": 2}
    one = parameter_count("sinenet", **kw, width=16, waves=1, multiplier=2.0)
    unet = parameter_count("unet", **kw, width=16, depth=3)
    assert abs(one - unet) / unet < 0.01
    four = parameter_count("sinenet", **kw, width=16, waves=4, multiplier=2.0)
    assert 3.9 < four / one < 4.0


def test_sinenet_circular_padding_commutes_with_shifts():
    torch.manual_seed(0)
    net = build_model("sinenet", in_channels=1, out_channels=1, dim=2, width=4, waves=2, depth=2, padding="circular",
                      interpolation="cubic")
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(net(torch.roll(x, (4, 8), (2, 3))), torch.roll(net(x), (4, 8), (2, 3)))


def test_matched_width_finds_the_nearest_parameter_count():
    kw = {"in_channels": 4, "out_channels": 1, "dim": 2}
    target = parameter_count("sinenet", **kw, width=16, waves=8, multiplier=1.425)
    width, count = matched_width(target, "unet", **kw, depth=3)
    neighbours = [parameter_count("unet", **kw, width=w, depth=3) for w in (width - 1, width + 1)]
    assert count == parameter_count("unet", **kw, width=width, depth=3)
    assert all(abs(count - target) <= abs(n - target) for n in neighbours)
    assert abs(count - target) / target < 0.05
