"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kryflow.evaluation.metrics import (
    Normalizer,
    band_errors,
    max_error,
    nrmse,
    relative_l2,
    summarize,
    time_to_target,
)


def _field(values: list[float]) -> np.ndarray:
    """One sample, one channel, 1D grid: shape (1, 1, N)."""
    return np.asarray(values, dtype=np.float64)[None, None, :]


def test_relative_l2_hand_computed() -> None:
    true = np.concatenate([_field([3.0, 4.0]), _field([1.0, 0.0])])  # norms 5 and 1
    pred = np.concatenate([_field([3.0, 5.0]), _field([1.0, 2.0])])  # errors 1 and 2
    np.testing.assert_allclose(relative_l2(pred, true), [0.2, 2.0])


def test_relative_l2_pools_channels_and_grid() -> None:
    true = np.array([[[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2), norm sqrt 8
    pred = true.copy()
    pred[0, 1, 0, 0] = 3.0  # one error of 2
    np.testing.assert_allclose(relative_l2(pred, true), [2.0 / math.sqrt(8.0)])


def test_relative_l2_zero_field() -> None:
    zero = np.zeros((2, 1, 3))
    other = zero.copy()
    other[1, 0, 0] = 1.0
    out = relative_l2(other, zero)
    assert out[0] == 0.0 and math.isinf(out[1])


def test_torch_and_numpy_agree_and_return_numpy() -> None:
    rng = np.random.default_rng(0)
    true, pred = rng.normal(size=(3, 2, 5, 4)), rng.normal(size=(3, 2, 5, 4))
    ref = relative_l2(pred, true)
    got = relative_l2(torch.from_numpy(pred).float(), torch.from_numpy(true).float())
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        relative_l2(np.zeros((1, 1, 3)), np.zeros((1, 1, 4)))


def test_nrmse_hand_computed() -> None:
    true = _field([0.0, 2.0, 4.0, 6.0])  # range 6
    pred = true + _field([1.0, -1.0, 1.0, -1.0])  # RMSE 1
    np.testing.assert_allclose(nrmse(pred, true), [1.0 / 6.0])
    # Two channels: channel 0 as above (1/6), channel 1 range 1, RMSE 0.5 -> mean (1/6 + 1/2)/2.
    true2 = np.concatenate([true, _field([0.0, 1.0, 0.0, 1.0])], axis=1)
    pred2 = np.concatenate([pred, _field([0.5, 0.5, 0.5, 0.5])], axis=1)
    np.testing.assert_allclose(nrmse(pred2, true2), [(1.0 / 6.0 + 0.5) / 2.0])


def test_max_error_hand_computed() -> None:
    true = np.concatenate([_field([0.0, 1.0, 2.0]), _field([5.0, 5.0, 5.0])])
    pred = np.concatenate([_field([0.5, -2.0, 2.0]), _field([5.0, 5.0, 5.25])])
    np.testing.assert_allclose(max_error(pred, true), [3.0, 0.25])


def _wave(n: int, k: int, dims: int) -> np.ndarray:
    """cos(2 pi k x / n) along the first axis of a (1, 1, n, ..., n) grid."""
    x = np.cos(2.0 * np.pi * k * np.arange(n) / n)
    return np.broadcast_to(x.reshape((1, 1, n) + (1,) * (dims - 1)), (1, 1) + (n,) * dims).copy()


@pytest.mark.parametrize("dims", [2, 3])
def test_band_errors_hand_computed(dims: int) -> None:
    n, amp = 8, 0.1
    true = np.ones((1, 1) + (n,) * dims)
    # ||true||^2 = n^d. An error amp*cos(2 pi k x/n) with 0 < k < n/2 has energy amp^2 n^d / 2,
    # so its relative error is amp/sqrt(2); at the Nyquist k = n/2 it is (-1)^x, energy amp^2 n^d.
    # |k|/Nyquist: k=1 -> 0.25 (low), k=2 -> 0.5 (mid), k=4 -> 1.0 (high).
    for k, band, expected in ((1, "low", amp / math.sqrt(2)), (2, "mid", amp / math.sqrt(2)), (4, "high", amp)):
        out = band_errors(true + amp * _wave(n, k, dims), true)
        assert set(out) == {"low", "mid", "high"}
        for name, value in out.items():
            np.testing.assert_allclose(value, [expected if name == band else 0.0], atol=1e-12)


def test_band_errors_partition_relative_l2() -> None:
    rng = np.random.default_rng(1)
    true, pred = rng.normal(size=(4, 2, 6, 10)), rng.normal(size=(4, 2, 6, 10))
    bands = band_errors(pred, true)
    total = sum(v**2 for v in bands.values())
    np.testing.assert_allclose(np.sqrt(total), relative_l2(pred, true), rtol=1e-10)


def test_summarize_hand_computed() -> None:
    out = summarize(np.array([4.0, 1.0, 3.0, 2.0]))
    assert out == pytest.approx({"mean": 2.5, "median": 2.5, "p90": 3.7, "max": 4.0})
    assert all(isinstance(v, float) for v in out.values())


def test_summarize_nan_and_empty_are_not_hidden() -> None:
    assert all(math.isnan(v) for v in summarize([1.0, float("nan")]).values())
    assert all(math.isnan(v) for v in summarize([]).values())


def test_time_to_target() -> None:
    nan = float("nan")
    history = [
        {"step": 0, "seconds": 0.5, "val_rel_l2": 1.0},
        {"step": 1, "seconds": 1.0, "val_rel_l2": nan},
        {"step": 2, "seconds": 2.0, "val_rel_l2": 0.4},
        {"step": 3, "seconds": 3.0, "val_rel_l2": nan},
        {"step": 4, "seconds": 4.5, "val_rel_l2": 0.1},
        {"step": 5, "seconds": 5.0, "val_rel_l2": 0.05},
    ]
    expected = {
        0.5: {"step": 2, "seconds": 2.0},
        0.1: {"step": 4, "seconds": 4.5},  # reached with equality
        0.01: {"step": None, "seconds": None},
    }
    assert time_to_target(history, [0.5, 0.1, 0.01]) == expected
    shuffled = pd.DataFrame(history).iloc[::-1]
    assert time_to_target(shuffled, [0.5, 0.1, 0.01]) == expected
    assert time_to_target([], [0.5]) == {0.5: {"step": None, "seconds": None}}


def _two_scale_stats() -> dict[str, np.ndarray]:
    return {
        "x_mean": np.array([1.0]),
        "x_std": np.array([2.0]),
        "y_mean": np.array([0.0, 0.0]),
        "y_std": np.array([100.0, 1.0]),
    }


def test_normalizer_roundtrip_keeps_dtype() -> None:
    norm = Normalizer(_two_scale_stats())
    x = torch.tensor([[[1.0, 3.0, 5.0]]], dtype=torch.float32)
    torch.testing.assert_close(norm.encode_x(x), torch.tensor([[[0.0, 1.0, 2.0]]]))
    y = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    back = norm.decode_y(norm.encode_y(y))
    assert back.dtype == torch.float64
    torch.testing.assert_close(back, y)
    with pytest.raises(ValueError, match="channels"):
        norm.encode_y(torch.zeros(1, 3, 4))


def test_scoring_denormalises_and_normalised_error_differs() -> None:
    """Channel 0 in units of ~100, channel 1 of ~1; the model errs only on channel 1."""
    norm = Normalizer(_two_scale_stats())
    true = torch.tensor([[[100.0, -100.0], [1.0, -1.0]]], dtype=torch.float64)  # (1, 2, 2)
    pred_normalised = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]], dtype=torch.float64)
    # Normalised space: true -> [[1,-1],[1,-1]] (norm 2), error [[0,0],[1,-1]] (norm sqrt 2).
    normalised_error = relative_l2(pred_normalised, norm.encode_y(true))
    np.testing.assert_allclose(normalised_error, [math.sqrt(2.0) / 2.0])
    # Physical: error [[0,0],[1,-1]] (norm sqrt 2) against ||true|| = sqrt(2*100^2 + 2).
    physical_error = relative_l2(norm.decode_y(pred_normalised), true)
    np.testing.assert_allclose(physical_error, [math.sqrt(2.0) / math.sqrt(20002.0)])
    assert physical_error[0] < normalised_error[0] / 50.0


def test_normalizer_fit_uses_given_split_and_guards_constant_channel() -> None:
    x = np.stack([np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4)])[None]  # (1, 2, 4, 4)
    y = np.arange(32.0).reshape(2, 1, 4, 4)
    norm = Normalizer.fit(x, y)
    stats = norm.to_dict()
    assert stats["x_mean"] == pytest.approx([3.0, 7.5])
    assert stats["x_std"] == pytest.approx([1.0, np.arange(16.0).std()])  # constant channel -> 1
    assert stats["y_mean"] == pytest.approx([15.5])
    encoded = norm.encode_x(torch.from_numpy(x))
    assert torch.isfinite(encoded).all()
    assert encoded[:, 0].abs().max() == 0.0


def test_normalizer_rejects_incomplete_stats() -> None:
    with pytest.raises(KeyError):
        Normalizer({"x_mean": [0.0], "x_std": [1.0]})
