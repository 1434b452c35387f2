"""neuraloperator's models (FNO, TFNO, UNO) as kryflow model entries, behind the ``neuralop`` extra.

``pip install -e ".[neuralop]"`` installs neuraloperator 2.x; without it the entries stay registered
and every use (config check, build) says which extra to install. neuraloperator is imported only
when one of these models is built, so the registry and the rest of kryflow never pay its import.

Complex weights are stored as real tensors. neuraloperator keeps its spectral weights as complex
parameters (dense, or the core and factors of a Tucker/CP/TT factorisation). kryflow's design
stores them real, trailing dimension 2, viewed as complex inside ``forward``
(:class:`~kryflow.models.ModeMixing`): pytorch-optimizer's curvature methods reject complex
parameters, M-FAC and L-BFGS flatten gradients into one real vector, and zeroth-order
perturbations of complex tensors are half-scaled. :func:`store_complex_as_real` does the same to
a built neuraloperator model: each complex parameter is replaced by a real one
(``<name>_as_real``, shape ``(*shape, 2)``) and the module sees the complex view of it during
every forward pass (:func:`show_complex`), so every registered optimizer treats the factorised
weights as ordinary real parameters (``tests/test_neuralop.py`` takes a few steps with each).

Per optimizer family, on these models: first-order methods, L-BFGS, the Hutchinson methods
(AdaHessian, Sophia-H: double backward through the FFTs and the factorised contraction), the
Shampoo/SOAP/Kron preconditioners, M-FAC and zeroth-order SPSA act on every real parameter alike,
the factors of a Tucker/CP/TT weight included. K-FAC and MKOR capture the layers they know
(neuraloperator's lifting, projection, channel-MLP and skip convolutions) and give the spectral
weights, which no Kronecker factorisation here models, the plain gradient with momentum. Kept in
neuraloperator's complex storage instead, Sophia-H, Shampoo, SOAP and Kron refuse the complex
parameters and M-FAC casts away their imaginary parts (measured with neuraloperator 2.0.0), which
is why no optimizer needs refusing for these entries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from kryflow._registry import ParameterError, unknown_names

from ._base import RegisteredModel, _check_like_default

__all__ = [
    "NeuralopFNO", "NeuralopTFNO", "NeuralopUNO", "neuralop_available", "show_complex", "store_complex_as_real",
]

#: What a user installs to get these entries.
EXTRA = "neuralop"
INSTALL = 'pip install -e ".[neuralop]"'

_SKIPS = ("linear", "identity", "soft-gating", "none")


def neuralop_available() -> bool:
    """Whether neuraloperator (``import neuralop``) is installed."""
    return importlib.util.find_spec("neuralop") is not None


def store_complex_as_real(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """Replace every complex parameter of ``net`` by a real one holding its real and imaginary parts.

    Arguments:
        net: a built model; changed in place.

    Returns:
        The slots ``(module, name)``: the real parameter is registered on ``module`` as
        ``<name>_as_real``, shape ``(*complex_shape, 2)``, so a state dict holds only real tensors.
        ``module.<name>`` exists only while :func:`show_complex` has set it (the model's forward pass).
    """
    slots = []
    for module in net.modules():
        for name, p in list(module._parameters.items()):
            if p is None or not p.is_complex():
                continue
            del module._parameters[name]
            real = nn.Parameter(torch.view_as_real(p.detach()).clone(), requires_grad=p.requires_grad)
            module.register_parameter(f"{name}_as_real", real)
            slots.append((module, name))
    return slots


@contextlib.contextmanager
def show_complex(slots):
    """Within the block, each slot's module sees ``<name>`` as the complex view of its real parameter.

    Attribute lookup finds the instance dictionary before nn.Module's registries, so the module's
    own code (``self.core``, ``self.factors[i]``) reads the view and gradients reach the real
    parameter. The views go again afterwards: a view aliases its parameter's storage with another
    dtype, which ``torch.save`` of the whole module (MLflow's model) refuses, and a view kept
    between steps would hold the previous step's graph.
    """
    for module, name in slots:
        # looked up each time: loading a state dict with assign=True replaces the parameter
        module.__dict__[name] = torch.view_as_complex(getattr(module, f"{name}_as_real"))
    try:
        yield
    finally:
        for module, name in slots:
            module.__dict__.pop(name, None)


class _NeuralOperator(RegisteredModel):
    """A neuraloperator model as a registered kryflow model (abstract: subclasses set ``name``).

    Subclasses declare their keyword arguments and defaults in ``DEFAULTS`` (JSON-able values:
    strings for neuraloperator's options, ``"none"`` for ``None``), the string options' choices in
    ``CHOICES``, and build the neuraloperator module in :meth:`_build`.
    """

    DEFAULTS: dict[str, Any] = {}
    CHOICES: dict[str, tuple[str, ...]] = {}
    #: numeric arguments that may be 0 (the base check wants numbers > 0)
    NON_NEGATIVE: tuple[str, ...] = ()

    @classmethod
    def declared_arguments(cls) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cls.DEFAULTS.items()}

    @classmethod
    def check_arguments(cls, kwargs: dict[str, Any]) -> None:
        """The base checks, the string options' choices, and first of all that neuraloperator is installed."""
        if not neuralop_available():
            raise ParameterError(
                f"model {cls.name!r} is neuraloperator's; it is an optional extra that is not installed here: "
                f"{INSTALL} (or choose a kryflow model: fno, unet, resnet, sinenet)")
        declared = cls.declared_arguments()
        unknown_names(kwargs, declared, f"model {cls.name!r}", "argument")
        for key, value in kwargs.items():
            if key in cls.CHOICES:
                if value not in cls.CHOICES[key]:
                    raise ParameterError(f"{key} must be one of {list(cls.CHOICES[key])}, got {value!r}", key)
            elif key in cls.NON_NEGATIVE:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    raise ParameterError(f"{key} must be a finite number >= 0, got {value!r}", key)
            else:
                _check_like_default(key, value, declared[key], key in cls.per_axis)
        cls._check_combination({**declared, **kwargs})

    @classmethod
    def _check_combination(cls, kw: dict[str, Any]) -> None:
        """Checks across arguments (subclasses); raise :class:`ParameterError` naming one of them."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, **kwargs):
        super().__init__()
        self._record({"in_channels": in_channels, "out_channels": out_channels, "dim": dim,
                      **self.declared_arguments(), **kwargs})
        self.dim = dim
        import neuralop.models

        self.net = self._build(neuralop.models, in_channels, out_channels, dim, self.config)
        self._complex_slots = store_complex_as_real(self.net)

    def _build(self, models, in_channels: int, out_channels: int, dim: int, cfg: dict) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *grid) → (B, out_channels, *grid)."""
        if x.dim() != self.dim + 2:
            raise ValueError(f"{self.name}(dim={self.dim}) expects input (B, C, *grid) with {self.dim} grid axes, "
                             f"got {tuple(x.shape)}")
        with show_complex(self._complex_slots):
            return self.net(x)

    def state_dict(self, *args, **kwargs):
        # neuraloperator's BaseModel adds its constructor arguments (functions, modules) under the
        # top-level key "_metadata" of whatever dict it is written into; kryflow records the
        # model's config itself, and a state dict of tensors only loads strictly and safely
        out = super().state_dict(*args, **kwargs)
        out.pop("_metadata", None)
        return out


def _per_axis(value, dim: int) -> list[int]:
    return [value] * dim if isinstance(value, int) else list(value)


def _none(value):
    return None if value == "none" else value


_FNO_DEFAULTS = {
    "n_modes": 16, "hidden_channels": 32, "n_layers": 4, "lifting_channel_ratio": 2.0,
    "projection_channel_ratio": 2.0, "positional_embedding": "grid", "norm": "none", "use_channel_mlp": True,
    "channel_mlp_expansion": 0.5, "channel_mlp_skip": "soft-gating", "fno_skip": "linear", "domain_padding": 0.0,
    "factorization": "dense", "rank": 1.0, "implementation": "factorized", "separable": False,
    "preactivation": False,
}
_FNO_CHOICES = {
    "positional_embedding": ("grid", "none"), "norm": ("none", "group_norm", "instance_norm"),
    "channel_mlp_skip": _SKIPS, "fno_skip": _SKIPS, "factorization": ("dense", "tucker", "cp", "tt"),
    "implementation": ("factorized", "reconstructed"),
}


class NeuralopFNO(_NeuralOperator):
    """neuraloperator's ``FNO`` (``neuralop.models.FNO``), dense complex spectral weights by default.

    Arguments are neuraloperator's, with JSON values: ``n_modes`` an int (every axis) or one per
    axis, counting both signs of a frequency as neuraloperator does (``n_modes: 16`` keeps about
    what kryflow's ``fno`` keeps with ``modes: 8``); ``"none"`` where neuraloperator takes
    ``None``; ``factorization`` one of dense, tucker, cp, tt with ``rank`` (a fraction of the dense
    parameter count when < 1); ``domain_padding`` a fraction of the grid (0: none).
    """

    name = "neuralop_fno"
    per_axis = ("n_modes",)
    DEFAULTS = _FNO_DEFAULTS
    CHOICES = _FNO_CHOICES
    NON_NEGATIVE = ("domain_padding",)

    @classmethod
    def _check_combination(cls, kw):
        if kw["factorization"] == "dense" and kw["rank"] != 1.0:
            raise ParameterError("rank applies to a factorised weight; set factorization to tucker, cp or tt "
                                 f"(dense takes rank 1.0), got rank {kw['rank']!r}", "rank")

    def _build(self, models, in_channels, out_channels, dim, cfg):
        modes = _per_axis(cfg["n_modes"], dim)
        if len(modes) != dim:
            raise ParameterError(f"n_modes must be an int or a list of {dim} ints, got {cfg['n_modes']!r}", "n_modes")
        factorization = {"dense": None, "tucker": "Tucker", "cp": "CP", "tt": "TT"}[cfg["factorization"]]
        return models.FNO(
            n_modes=tuple(modes), in_channels=in_channels, out_channels=out_channels,
            hidden_channels=cfg["hidden_channels"], n_layers=cfg["n_layers"],
            lifting_channel_ratio=cfg["lifting_channel_ratio"],
            projection_channel_ratio=cfg["projection_channel_ratio"],
            positional_embedding=_none(cfg["positional_embedding"]), norm=_none(cfg["norm"]),
            use_channel_mlp=cfg["use_channel_mlp"], channel_mlp_expansion=cfg["channel_mlp_expansion"],
            channel_mlp_skip=_none(cfg["channel_mlp_skip"]), fno_skip=_none(cfg["fno_skip"]),
            domain_padding=cfg["domain_padding"] or None, factorization=factorization, rank=cfg["rank"],
            implementation=cfg["implementation"], separable=cfg["separable"], preactivation=cfg["preactivation"],
        )


class NeuralopTFNO(NeuralopFNO):
    """neuraloperator's ``TFNO``: its FNO with Tucker-factorised spectral weights (rank 0.1 by default,
    about a tenth of the dense spectral parameters). Arguments as :class:`NeuralopFNO`."""

    name = "neuralop_tfno"
    DEFAULTS = {**_FNO_DEFAULTS, "factorization": "tucker", "rank": 0.1}


class NeuralopUNO(_NeuralOperator):
    """neuraloperator's ``UNO`` (U-shaped neural operator): Fourier layers that change resolution.

    Arguments: ``uno_out_channels``, ``uno_n_modes`` (an int per layer, or a list per axis) and
    ``uno_scalings`` (one factor per layer, every axis alike) give the layers, one entry each;
    ``hidden_channels``, ``lifting_channels``, ``projection_channels`` as neuraloperator's. Skips
    join layer ``i`` to layer ``n - 1 - i`` (neuraloperator's default). The scalings must multiply
    to 1 (the output is on the input grid), and every grid axis must be divisible by
    :meth:`resolution_divisor` so that every layer's grid is whole.
    """

    name = "neuralop_uno"
    DEFAULTS = {
        "hidden_channels": 32, "lifting_channels": 64, "projection_channels": 64,
        "uno_out_channels": [32, 64, 64, 32], "uno_n_modes": [8, 6, 6, 8], "uno_scalings": [1.0, 0.5, 2.0, 1.0],
        "positional_embedding": "grid", "norm": "none", "channel_mlp_skip": "linear", "fno_skip": "linear",
        "horizontal_skip": "linear", "factorization": "dense", "rank": 1.0, "implementation": "factorized",
        "domain_padding": 0.0,
    }
    # a layer whose input joins a skip has more input than output channels, which neuraloperator's
    # identity and soft-gating skips refuse: those two are left to the horizontal skips
    CHOICES = _FNO_CHOICES | {"channel_mlp_skip": ("linear", "none"), "fno_skip": ("linear", "none"),
                              "horizontal_skip": _SKIPS}
    NON_NEGATIVE = ("domain_padding",)

    @classmethod
    def _check_combination(cls, kw):
        n = len(kw["uno_out_channels"])
        for key in ("uno_out_channels", "uno_n_modes", "uno_scalings"):
            value = kw[key]
            if len(value) != n or n < 1:
                raise ParameterError(f"{key} needs one entry per layer ({n} from uno_out_channels, at least 1), "
                                     f"got {value!r}", key)
        if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in kw["uno_out_channels"]):
            raise ParameterError(f"uno_out_channels must be positive integers, got {kw['uno_out_channels']!r}",
                                 "uno_out_channels")
        for m in kw["uno_n_modes"]:
            ms = m if isinstance(m, list) else [m]
            if not ms or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ms):
                raise ParameterError(f"uno_n_modes entries must be positive integers (or a list per axis), "
                                     f"got {kw['uno_n_modes']!r}", "uno_n_modes")
        scales = kw["uno_scalings"]
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < math.inf for s in scales):
            raise ParameterError(f"uno_scalings must be numbers > 0, got {scales!r}", "uno_scalings")
        if _cumulative(scales)[-1] != 1:
            raise ParameterError(f"uno_scalings must multiply to 1 so that the output is on the input grid, got "
                                 f"{scales!r} (product {math.prod(scales):g})", "uno_scalings")
        if kw["factorization"] == "dense" and kw["rank"] != 1.0:
            raise ParameterError("rank applies to a factorised weight; set factorization to tucker, cp or tt",
                                 "rank")

    @classmethod
    def resolution_divisor(cls, **kwargs) -> int:
        """The least common multiple of the denominators of the running products of ``uno_scalings``:
        with it every layer's grid size is a whole number."""
        scales = kwargs.get("uno_scalings", cls.DEFAULTS["uno_scalings"])
        return math.lcm(*(c.denominator for c in _cumulative(scales)))

    def _build(self, models, in_channels, out_channels, dim, cfg):
        modes = [_per_axis(m, dim) for m in cfg["uno_n_modes"]]
        if any(len(m) != dim for m in modes):
            raise ParameterError(f"uno_n_modes entries must be an int or a list of {dim} ints, "
                                 f"got {cfg['uno_n_modes']!r}", "uno_n_modes")
        factorization = {"dense": None, "tucker": "Tucker", "cp": "CP", "tt": "TT"}[cfg["factorization"]]
        with contextlib.redirect_stdout(io.StringIO()):  # neuraloperator 2.0's UNO prints its skip types
            return models.UNO(
                in_channels=in_channels, out_channels=out_channels, hidden_channels=cfg["hidden_channels"],
                lifting_channels=cfg["lifting_channels"], projection_channels=cfg["projection_channels"],
                positional_embedding=_none(cfg["positional_embedding"]), n_layers=len(cfg["uno_out_channels"]),
                uno_out_channels=list(cfg["uno_out_channels"]), uno_n_modes=modes,
                uno_scalings=[[float(s)] * dim for s in cfg["uno_scalings"]], norm=_none(cfg["norm"]),
                channel_mlp_skip=_none(cfg["channel_mlp_skip"]), fno_skip=_none(cfg["fno_skip"]),
                horizontal_skip=_none(cfg["horizontal_skip"]), factorization=factorization, rank=cfg["rank"],
                implementation=cfg["implementation"], domain_padding=cfg["domain_padding"] or None,
            )


def _cumulative(scales) -> list[Fraction]:
    out, c = [], Fraction(1)
    for s in scales:
        c *= Fraction(s).limit_denominator(64)
        out.append(c)
    return out
