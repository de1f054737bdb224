"""Tests of the shared GNA window formulas (simulator.geometry) against gna.md and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import geometry


def windows(n, w, s=1, d=1, causal=False):
    """``{query: sorted visible keys}`` from the dense per-axis mask."""
    mask = geometry.axis_mask(n, w, s, d, causal)
    return {i: np.flatnonzero(mask[i]).tolist() for i in range(n)}


def rng_range(a, b):
    return list(range(a, b + 1))


# --------------------------------------------------------------------------------------------
# gna.md worked examples, n = 10 (inclusive key ranges)
# --------------------------------------------------------------------------------------------


def test_worked_example_w4_s1():
    got = windows(10, 4, 1)
    for i in (0, 1, 2):
        assert got[i] == rng_range(0, 3)
    assert got[3] == rng_range(1, 4)
    for i in range(3, 8):
        assert got[i] == rng_range(i - 2, i + 1)  # even window: one more key on the left
    for i in (8, 9):
        assert got[i] == rng_range(6, 9)


def test_worked_example_w4_s2():
    got = windows(10, 4, 2)
    expect = {(0, 1): (0, 3), (2, 3): (1, 4), (4, 5): (3, 6), (6, 7): (5, 8), (8, 9): (6, 9)}
    for queries, (a, b) in expect.items():
        for i in queries:
            assert got[i] == rng_range(a, b)


def test_worked_example_w4_s4_blocked():
    got = windows(10, 4, 4)
    for i in range(4):
        assert got[i] == rng_range(0, 3)
    for i in range(4, 8):
        assert got[i] == rng_range(4, 7)
    for i in (8, 9):  # partial last block shifted back to overlap
        assert got[i] == rng_range(6, 9)


def test_worked_example_w4_s2_causal():
    got = windows(10, 4, 2, causal=True)
    expect = {0: [0], 1: [0, 1], 2: rng_range(0, 2), 3: rng_range(0, 3), 4: rng_range(2, 4)}
    expect[5] = rng_range(2, 5)
    for i, keys in expect.items():
        assert got[i] == keys


def test_worked_example_w3_s1_d2():
    got = windows(10, 3, 1, 2)
    expect = {0: [0, 2, 4], 1: [1, 3, 5], 4: [2, 4, 6], 8: [4, 6, 8], 9: [5, 7, 9]}
    for i, keys in expect.items():
        assert got[i] == keys


def test_window_halves():
    assert geometry.window_halves(4) == (2, 1)
    assert geometry.window_halves(5) == (2, 2)
    assert geometry.window_halves(2) == (1, 0)


def test_group_lengths():
    assert geometry.group_lengths(10, 3).tolist() == [4, 3, 3]
    assert geometry.group_lengths(9, 3).tolist() == [3, 3, 3]
    assert geometry.group_lengths(7, 1).tolist() == [7]


# --------------------------------------------------------------------------------------------
# Brute-force properties over sweeps
# --------------------------------------------------------------------------------------------


def _axis_sweep():
    for n in (2, 3, 5, 10, 17):
        for w in range(2, n + 1):
            for s in range(1, w + 1):
                for c in (False, True):
                    yield n, w, s, c


def test_window_sizes_and_query_inside():
    for n, w, s, c in _axis_sweep():
        j = np.arange(n)
        start, end = geometry.window(j, n, w, s, c)
        assert np.all((start >= 0) & (end <= n))
        if c:
            assert np.all(end == j + 1) and np.all(end - start <= w)
        else:
            assert np.all(end - start == w)
            assert np.all((start <= j) & (j < end))


def test_windows_are_monotone_and_overlapping():
    # Both ends non-decreasing and consecutive windows touch: the union of a run is one interval.
    for n, w, s, c in _axis_sweep():
        start, end = geometry.window(np.arange(n), n, w, s, c)
        assert np.all(np.diff(start) >= 0) and np.all(np.diff(end) >= 0)
        assert np.all(start[1:] <= end[:-1])


def test_inverse_window_matches_brute_force():
    for n, w, s, c in _axis_sweep():
        start, end = geometry.window(np.arange(n), n, w, s, c)
        qs, qe = geometry.inverse_window(np.arange(n), n, w, s, c)
        for k in range(n):
            queries = np.flatnonzero((start <= k) & (k < end))
            assert (qs[k], qe[k]) == (queries.min(), queries.max() + 1), (n, w, s, c, k)
            assert queries.size == qe[k] - qs[k]


def test_tile_kv_box_and_intersection_match_brute_force():
    rng = np.random.default_rng(0)
    for n, w, s, c in _axis_sweep():
        mask = geometry.axis_mask(n, w, s, 1, c)
        a = int(rng.integers(0, n))
        b = int(rng.integers(a + 1, n + 1))
        seen_any = np.flatnonzero(mask[a:b].any(0))
        seen_all = np.flatnonzero(mask[a:b].all(0))
        lo, hi = geometry.tile_kv_box(a, b, n, w, s, c)
        assert (lo, hi) == (seen_any.min(), seen_any.max() + 1)
        lo, hi = geometry.tile_kv_intersection(a, b, n, w, s, c)
        assert list(range(lo, hi)) == seen_all.tolist()


def test_axis_mask_dilation_groups():
    mask = geometry.axis_mask(11, 3, 2, 3, False)
    i = np.arange(11)
    assert not np.any(mask & (i[:, None] % 3 != i[None, :] % 3))
    assert np.all(mask.sum(1) == 3)


def test_neighborhood_mask_is_product_of_axis_masks():
    params = geometry.make_params((4, 5, 3), (2, 3, 2), (1, 2, 2), (2, 1, 1), (False, True, False))
    mask = geometry.neighborhood_mask(params).reshape(4, 5, 3, 4, 5, 3)
    masks = [
        geometry.axis_mask(n, w, s, d, c)
        for n, w, s, d, c in zip(
            params.spatial_shape,
            params.kernel_size,
            params.stride,
            params.dilation,
            params.is_causal,
            strict=True,
        )
    ]
    expect = np.einsum("ad,be,cf->abcdef", *[m.astype(int) for m in masks]).astype(bool)
    assert np.array_equal(mask, expect)
    counts = geometry.visible_keys_per_query(params)
    assert np.array_equal(counts, mask.reshape(60, 60).sum(1).reshape(4, 5, 3))


def test_self_attention_and_blocked_special_cases():
    params = geometry.make_params((6, 7), (6, 7))
    assert geometry.neighborhood_mask(params).all()
    blocked = geometry.axis_mask(8, 4, 4, 1, False)
    assert np.array_equal(blocked, np.kron(np.eye(2, dtype=bool), np.ones((4, 4), dtype=bool)))


# --------------------------------------------------------------------------------------------
# Validation messages
# --------------------------------------------------------------------------------------------


def test_make_params_broadcasts():
    p = geometry.make_params((8, 9, 10), 4, (1, 2, 3), 2, True)
    assert p.kernel_size == (4, 4, 4) and p.stride == (1, 2, 3) and p.dilation == (2, 2, 2)
    assert p.is_causal == (True, True, True) and p.rank == 3
    assert p.group_lengths(1).tolist() == [5, 4]


@pytest.mark.parametrize(
    "args, message",
    [
        (((), 2), "1, 2 or 3 spatial axes"),
        (((4, 0), 2), "spatial sizes must be >= 1"),
        (((8,), 1), "kernel_size must be >= 2 on every axis, got \\(1,\\) \\(axis 0\\)"),
        (((8,), True), "kernel_size must be an int or a tuple of 1 ints"),
        (((8, 8), (4, 4, 4)), "kernel_size must have one entry per spatial axis \\(2\\), got 3"),
        (((8, 8), (4, 4.0)), "kernel_size entries must be ints"),
        (((8,), 4, 0), "stride must be >= 1 on every axis"),
        (((8,), 4, 5), "stride must be <= kernel_size on every axis: axis 0 has stride 5"),
        (((8,), 4, 1, 0), "dilation must be >= 1 on every axis"),
        (((8, 9), 4, 1, (1, 3)), "axis 1 has kernel_size 4 \\* dilation 3 = 12 > size 9"),
        (((8,), 4, 1, 1, (1,)), "is_causal entries must be bools"),
    ],
)
def test_make_params_errors(args, message):
    with pytest.raises(ValueError, match=message):
        geometry.make_params(*args)


def test_validate_tile_shape():
    assert geometry.validate_tile_shape("q_tile", 8, 2) == (8, 8)
    assert geometry.validate_tile_shape("q_tile", (2, 8, 8), 3) == (2, 8, 8)
    with pytest.raises(ValueError, match="q_tile entries must be positive"):
        geometry.validate_tile_shape("q_tile", (2, 0), 2)
    with pytest.raises(ValueError, match="kv_tile must have one entry per spatial axis"):
        geometry.validate_tile_shape("kv_tile", (2, 8), 3)
