"""Tests of the GNA simulator against brute force over dense masks (small grids)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

import simulator
from simulator import geometry

# --------------------------------------------------------------------------------------------
# Brute force
# --------------------------------------------------------------------------------------------


def _ceil(a, b):
    return -(-a // b)


def _group_block(params, mask, phases):
    """Mask restricted to one dilation group; rows/cols in raster order of the in-group grid."""
    coords = np.stack(np.unravel_index(np.arange(mask.shape[0]), params.spatial_shape), 1)
    sel = np.all(coords % np.asarray(params.dilation) == np.asarray(phases), axis=1)
    idx = np.flatnonzero(sel)
    j = coords[idx] // np.asarray(params.dilation)
    return mask[np.ix_(idx, idx)], j


def brute_static(params, q, kv):
    """``{(phases, q_tile): (visited KV tile index set, fully-unmasked flag)}`` by brute force."""
    mask = geometry.neighborhood_mask(params)
    out = {}
    for phases in itertools.product(*[range(d) for d in params.dilation]):
        sub, j = _group_block(params, mask, phases)
        qt = [tuple(x) for x in j // np.asarray(q)]
        kt = [tuple(x) for x in j // np.asarray(kv)]
        for t in sorted(set(qt)):
            rows = [i for i, x in enumerate(qt) if x == t]
            visited, full = set(), True
            for u in sorted(set(kt)):
                cols = [i for i, x in enumerate(kt) if x == u]
                block = sub[np.ix_(rows, cols)]
                if block.any():
                    visited.add(u)
                    full &= bool(block.all())
            out[(phases, t)] = (visited, full)
    return out


def brute_dynamic(params, q, kv):
    """``{(phases, q_tile): (KV tile origin set, every tile hit, fully-unmasked flag)}``."""
    mask = geometry.neighborhood_mask(params)
    out = {}
    for phases in itertools.product(*[range(d) for d in params.dilation]):
        sub, j = _group_block(params, mask, phases)
        n_g = j.max(0) + 1
        qt = [tuple(x) for x in j // np.asarray(q)]
        for t in sorted(set(qt)):
            rows = [i for i, x in enumerate(qt) if x == t]
            seen = j[sub[rows].any(0)]
            lo, hi = seen.min(0), seen.max(0) + 1
            counts = [_ceil(int(h - low), k) for low, h, k in zip(lo, hi, kv, strict=True)]
            origins = set(
                itertools.product(
                    *[
                        range(int(a), int(a) + c * k, k)
                        for a, c, k in zip(lo, counts, kv, strict=True)
                    ]
                )
            )
            hit, full = True, True
            for o in origins:
                inside = np.all((j >= np.asarray(o)) & (j < np.asarray(o) + np.asarray(kv)), 1)
                block = sub[np.ix_(rows, np.flatnonzero(inside))]
                hit &= bool(block.any())
                full &= bool(block.all())
            assert np.all(hi <= n_g)
            out[(phases, t)] = (origins, hit, full)
    return out


def brute_1d(params, q, kv):
    """``[num_q_tiles]`` visited KV tile index sets and the fully-unmasked flag."""
    mask = geometry.neighborhood_mask(params)
    n = mask.shape[0]
    visited, full = [], True
    for t in range(_ceil(n, q)):
        rows = mask[t * q : (t + 1) * q]
        v = set()
        for u in range(_ceil(n, kv)):
            block = rows[:, u * kv : (u + 1) * kv]
            if block.any():
                v.add(u)
                full &= bool(block.all())
        visited.append(v)
    return visited, full


def random_config(rng, max_tokens=360):
    """A random valid small configuration (rank, shape, window, stride, dilation, causal, tiles)."""
    while True:
        rank = int(rng.integers(1, 4))
        shape = tuple(int(x) for x in rng.integers(2, [40, 14, 9][rank - 1], size=rank))
        if math.prod(shape) > max_tokens:
            continue
        d = tuple(
            int(rng.integers(1, max(2, n // 2) + 1)) if rng.random() < 0.35 else 1 for n in shape
        )
        if any(2 * di > n for di, n in zip(d, shape, strict=True)):
            continue
        w = tuple(int(rng.integers(2, n // di + 1)) for n, di in zip(shape, d, strict=True))
        s = tuple(int(rng.integers(1, wi + 1)) for wi in w)
        c = tuple(bool(rng.random() < 0.3) for _ in shape)
        q = tuple(int(rng.integers(1, 6)) for _ in shape)
        kv = tuple(int(rng.integers(1, 6)) for _ in shape)
        return shape, w, s, d, c, q, kv


EDGE_CASES = [
    # shape, window, stride, dilation, causal, q_tile, kv_tile
    ((17,), 17, 1, 1, False, (4,), (4,)),  # w == n: self-attention
    ((17,), 5, 5, 1, False, (5,), (5,)),  # blocked, partial last block shifted back
    ((17,), 4, 2, 1, True, (3,), (2,)),
    ((67,), 8, 3, 4, False, (5,), (7,)),  # groups of different lengths
    ((12,), 2, 1, 6, True, (1,), (1,)),  # large dilation, tiny tiles
    ((10,), 3, 1, 2, False, (16,), (16,)),  # tile larger than the axis
    ((9, 7), (9, 7), (1, 1), 1, (False, False), (4, 4), (2, 3)),
    ((9, 7), (3, 3), (3, 3), 1, (True, False), (3, 3), (3, 3)),
    ((9, 7), (3, 3), (2, 1), (3, 2), (False, True), (2, 2), (1, 3)),
    ((5, 6, 7), (2, 3, 4), (2, 3, 4), 1, (True, True, True), (2, 3, 4), (2, 3, 4)),
    ((5, 6, 7), (5, 6, 7), 1, 1, False, (2, 2, 2), (4, 4, 4)),
    ((6, 4, 9), (3, 2, 3), (1, 2, 3), (2, 1, 3), (False, True, False), (2, 1, 2), (3, 2, 1)),
]


def _configs(seed, n):
    rng = np.random.default_rng(seed)
    return EDGE_CASES + [random_config(rng) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Brute-force agreement
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", _configs(0, 60), ids=str)
def test_static_matches_brute_force(config):
    shape, w, s, d, c, q, kv = config
    res = simulator.simulate(shape, w, s, d, c, q_tile=q, kv_tile=kv, tiling="static")
    brute = brute_static(res.params, q, kv)
    counts = res.kv_tiles_per_q_tile
    assert int(res.q_tile_exists.sum()) == len(brute) == res.num_q_tiles
    all_full = True
    for (phases, t), (visited, full) in brute.items():
        assert counts[phases + t] == len(visited)
        origins = res.visited_kv_tiles(t, phases)
        assert np.all(origins % np.asarray(kv) == 0)
        assert {tuple(int(x) for x in o) for o in origins // np.asarray(kv)} == visited
        all_full &= full
    assert counts[~res.q_tile_exists].sum() == 0
    assert res.perfectly_block_sparse == all_full
    assert res.max_kv_tiles == counts.max()
    assert res.visited_tile_pairs == counts.sum()


@pytest.mark.parametrize("config", _configs(1, 60), ids=str)
def test_dynamic_matches_brute_force(config):
    shape, w, s, d, c, q, kv = config
    res = simulator.simulate(shape, w, s, d, c, q_tile=q, kv_tile=kv, tiling="dynamic")
    brute = brute_dynamic(res.params, q, kv)
    counts = res.kv_tiles_per_q_tile
    all_full = True
    for (phases, t), (origins, hit, full) in brute.items():
        assert hit  # every dynamic tile holds an unmasked entry
        assert counts[phases + t] == len(origins)
        got = {tuple(int(x) for x in o) for o in res.visited_kv_tiles(t, phases)}
        assert got == origins
        all_full &= full
    assert res.perfectly_block_sparse == all_full


@pytest.mark.parametrize("config", _configs(2, 60), ids=str)
def test_1d_matches_brute_force(config):
    shape, w, s, d, c, q, kv = config
    q1, kv1 = math.prod(q), math.prod(kv)
    res = simulator.simulate(shape, w, s, d, c, q_tile=q1, kv_tile=kv1, tiling="1d")
    visited, full = brute_1d(res.params, q1, kv1)
    assert res.kv_tiles_per_q_tile.tolist() == [len(v) for v in visited]
    for t, v in enumerate(visited):
        got = res.visited_kv_tiles(t)
        assert got.shape == (len(v), 1)
        assert set((got[:, 0] // kv1).tolist()) == v
    assert res.perfectly_block_sparse == full
    assert res.total_kv_tiles == _ceil(math.prod(shape), kv1)


def test_1d_tiles_that_straddle_slabs_and_chunks(monkeypatch):
    # Force many tiny chunks so the chunked merge path is exercised.
    from simulator import raster_tiling

    monkeypatch.setattr(raster_tiling, "_CHUNK_ITEMS", 7)
    params = (7, 5, 6), (3, 2, 4), (2, 1, 3), (2, 1, 1), (False, True, False)
    res = simulator.simulate(*params, q_tile=23, kv_tile=9, tiling="1d")
    visited, full = brute_1d(res.params, 23, 9)
    assert res.kv_tiles_per_q_tile.tolist() == [len(v) for v in visited]
    assert res.perfectly_block_sparse == full


@pytest.mark.parametrize(
    "shape, w, s, d, q, kv",
    [((60,), 4, 4, 1, 4, 4), ((8, 8), (8, 8), 1, 1, 64, 16), ((8, 8), (2, 8), (2, 8), 1, 16, 16)],
)
def test_1d_perfect_cases(shape, w, s, d, q, kv):
    res = simulator.simulate(shape, w, s, d, q_tile=q, kv_tile=kv, tiling="1d")
    assert res.perfectly_block_sparse
    assert brute_1d(res.params, q, kv)[1]


@pytest.mark.parametrize("seed", range(4))
def test_1d_common_keys_match_brute_force(seed):
    from simulator.raster_tiling import _common_keys, raster_boxes

    rng = np.random.default_rng(100 + seed)
    for _ in range(10):
        shape, w, s, d, c, q, _ = random_config(rng)
        params = geometry.make_params(shape, w, s, d, c)
        mask = geometry.neighborhood_mask(params)
        n, tile = mask.shape[0], math.prod(q)
        starts = np.arange(0, n, tile)
        num_q = starts.size
        owner, lo, hi = raster_boxes(starts, np.minimum(starts + tile, n), shape)
        common = _common_keys(params, owner, lo, hi, num_q)
        for t in range(num_q):
            expect = set(np.flatnonzero(mask[t * tile : (t + 1) * tile].all(0)).tolist())
            per_axis = [
                range(int(ph[t]) + di * int(js[t]), int(ph[t]) + di * int(je[t]), di)
                for (ph, js, je), di in zip(common, params.dilation, strict=True)
            ]
            got = {int(np.ravel_multi_index(k, shape)) for k in itertools.product(*per_axis)}
            assert got == expect


def test_raster_boxes_cover_runs_exactly():
    from simulator.raster_tiling import raster_boxes

    rng = np.random.default_rng(3)
    for shape in [(13,), (4, 7), (3, 5, 6), (2, 1, 9)]:
        n = math.prod(shape)
        a = rng.integers(0, n, size=50)
        b = np.minimum(a + rng.integers(1, n + 1, size=50), n)
        owner, lo, hi = raster_boxes(a, b, shape)
        assert np.bincount(owner, minlength=50).max() <= 2 * len(shape) - 1
        for i in range(50):
            cells = set()
            for k in np.flatnonzero(owner == i):
                ranges = [range(x, y) for x, y in zip(lo[k], hi[k], strict=True)]
                for c in itertools.product(*ranges):
                    flat = int(np.ravel_multi_index(c, shape))
                    assert flat not in cells
                    cells.add(flat)
            assert cells == set(range(a[i], b[i]))


# --------------------------------------------------------------------------------------------
# The paper's numbers and bound definitions
# --------------------------------------------------------------------------------------------


def test_flux_4k_bound():
    res = simulator.simulate((256, 256), 80, 16, q_tile=(16, 8), kv_tile=(16, 8))
    assert res.flop_bound == pytest.approx(10.24)
    assert res.speedup_bound == pytest.approx(10.24)
    assert res.max_kv_tiles == 50 and res.total_kv_tiles == 512
    assert res.perfectly_block_sparse


def test_hunyuan_bound():
    res = simulator.simulate(
        (30, 48, 80), (18, 24, 24), (16, 8, 8), q_tile=(2, 8, 8), kv_tile=(2, 8, 8)
    )
    assert res.flop_bound == pytest.approx(115200 / 10368)
    assert res.speedup_bound == pytest.approx(900 / 81)
    assert res.kv_tiles_per_q_tile.shape == (1, 1, 1, 15, 6, 10)
    assert res.perfectly_block_sparse
    na = simulator.simulate((30, 48, 80), (18, 24, 24), 1, q_tile=(2, 8, 8), kv_tile=(2, 8, 8))
    assert na.speedup_bound < res.speedup_bound and not na.perfectly_block_sparse


def test_worst_tile_bounds_not_mean():
    res = simulator.simulate((17,), 4, 1, q_tile=(4,), kv_tile=(4,), tiling="static")
    counts = res.kv_tiles_per_q_tile.ravel()
    assert res.speedup_bound == pytest.approx(res.total_kv_tiles / counts.max())
    assert res.mean_bound == pytest.approx(res.total_kv_tiles / counts.mean())
    assert res.speedup_bound <= res.mean_bound


def test_dense_window_gives_bound_one():
    for tiling, tile in [("static", (3, 4)), ("dynamic", (3, 4)), ("1d", 12)]:
        res = simulator.simulate((9, 10), (9, 10), q_tile=tile, kv_tile=tile, tiling=tiling)
        assert res.speedup_bound == pytest.approx(1.0)
        assert res.flop_bound == pytest.approx(1.0)


def test_dilation_bound_counts_all_groups():
    # d=2 with the window covering each whole group: half the dense work.
    res = simulator.simulate((32,), 16, 1, 2, q_tile=(8,), kv_tile=(8,))
    assert res.num_q_tiles == 4 and res.max_kv_tiles == 2 and res.total_kv_tiles == 4
    assert res.speedup_bound == pytest.approx(2.0)
    assert res.kv_tiles_per_q_tile.shape == (2, 2)


def test_exact_flop_bound_matches_mask():
    rng = np.random.default_rng(5)
    for _ in range(20):
        shape, w, s, d, c, q, kv = random_config(rng)
        res = simulator.simulate(shape, w, s, d, c, q_tile=q, kv_tile=kv)
        mask = geometry.neighborhood_mask(res.params)
        assert res.exact_flop_bound == pytest.approx(mask.size / mask.sum())
        if not any(c):
            assert res.exact_flop_bound == pytest.approx(res.flop_bound)


def test_end_to_end_amdahl():
    res = simulator.simulate((256, 256), 80, 16, q_tile=(16, 8), kv_tile=(16, 8))
    f = 0.518
    assert res.end_to_end(f) == pytest.approx(1 / ((1 - f) + f / 10.24))
    fe = f * 20 / 50
    assert res.end_to_end(f, 20, 50) == pytest.approx(1 / ((1 - fe) + fe / 10.24))
    assert res.end_to_end(f, 0, 50) == pytest.approx(1.0)
    assert res.end_to_end(1.0) == pytest.approx(10.24)
    with pytest.raises(ValueError, match="attention_fraction must be in"):
        res.end_to_end(1.5)
    with pytest.raises(ValueError, match="sparse_steps must be in"):
        res.end_to_end(0.5, 3, 2)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        res.end_to_end(0.5, 0, 0)


def test_kv_box_tiles_agree_with_visited_tiles():
    res = simulator.simulate(
        (21, 13), (7, 5), (3, 2), (2, 1), (False, True), q_tile=(3, 4), kv_tile=(2, 3)
    )
    first0, count0 = res.kv_box_tiles(0)
    first1, count1 = res.kv_box_tiles(1)
    assert first0.shape == (2, 4) and first1.shape == (1, 4)
    assert np.array_equal(count0, res.kv_tiles_per_axis(0))
    start, end = res.kv_box(0)
    assert np.all((first0 * 2 <= start) & ((first0 + count0) * 2 >= end) | (count0 == 0))
    for g0, t0, t1 in itertools.product(range(2), range(4), range(4)):
        if not res.q_tile_exists[g0, 0, t0, t1]:
            continue
        tiles = res.visited_kv_tiles((t0, t1), (g0, 0)) // np.asarray(res.kv_tile)
        expect = itertools.product(
            range(first0[g0, t0], first0[g0, t0] + count0[g0, t0]),
            range(first1[0, t1], first1[0, t1] + count1[0, t1]),
        )
        assert [tuple(x) for x in tiles.tolist()] == [tuple(int(v) for v in e) for e in expect]
    dyn = simulator.simulate(
        (21, 13), (7, 5), (3, 2), (2, 1), q_tile=(3, 4), kv_tile=(2, 3), tiling="dynamic"
    )
    with pytest.raises(ValueError, match="kv_box_tiles needs tiling 'static'"):
        dyn.kv_box_tiles(0)
    one = simulator.simulate((21, 13), (7, 5), tiling="1d")
    with pytest.raises(ValueError, match="needs tiling 'static' or 'dynamic'"):
        one.kv_box(0)
    with pytest.raises(ValueError, match="axis must be in"):
        res.kv_box(2)


# --------------------------------------------------------------------------------------------
# Speed smoke (real timings live in bench/)
# --------------------------------------------------------------------------------------------


def test_large_grids_run():
    res = simulator.simulate(
        (30, 48, 80),
        (18, 24, 24),
        (16, 8, 8),
        q_tile=(2, 8, 8),
        kv_tile=(2, 8, 8),
        tiling="dynamic",
    )
    assert res.speedup_bound == pytest.approx(900 / 81)
    one = simulator.simulate(
        (30, 48, 80), (18, 24, 24), (16, 8, 8), q_tile=128, kv_tile=128, tiling="1d"
    )
    assert one.speedup_bound < res.speedup_bound  # raster order loses most of the sparsity


# --------------------------------------------------------------------------------------------
# recommend
# --------------------------------------------------------------------------------------------


def test_recommend_is_consistent_with_simulate():
    recs = simulator.recommend(
        (30, 48, 80), (18, 24, 24), q_tiles=[(2, 8, 8), (4, 8, 8)], kv_tiles=[(2, 8, 8)], top=6
    )
    assert len(recs) == 6
    bounds = [r.speedup_bound for r in recs]
    assert bounds == sorted(bounds, reverse=True)
    for r in recs:
        res = simulator.simulate(
            (30, 48, 80), r.window, r.stride, q_tile=r.q_tile, kv_tile=r.kv_tile
        )
        assert r.speedup_bound == pytest.approx(res.speedup_bound)
        assert r.mean_bound == pytest.approx(res.mean_bound)
        assert r.perfectly_block_sparse == res.perfectly_block_sparse


def test_recommend_finds_the_best_by_exhaustive_search():
    shape, w = (24, 20), (6, 5)
    recs = simulator.recommend(shape, w, q_tiles=[(4, 4), (2, 5)], kv_tiles=[(4, 4)], top=3)
    best = max(
        simulator.simulate(shape, w, (s0, s1), q_tile=q, kv_tile=(4, 4)).speedup_bound
        for s0 in range(1, 7)
        for s1 in range(1, 6)
        for q in [(4, 4), (2, 5)]
    )
    assert recs[0].speedup_bound == pytest.approx(best)


def test_recommend_options():
    recs = simulator.recommend(
        (64,), 12, q_tiles=[(8,)], kv_tiles=[(8,)], strides=[1, 2, 4], top=50
    )
    assert {r.stride[0] for r in recs} <= {1, 2, 4}
    perfect = simulator.recommend(
        (64,), 12, q_tiles=[(8,)], kv_tiles=[(4,)], window_slack=4, perfect_only=True
    )
    assert perfect and all(r.perfectly_block_sparse for r in perfect)
    assert all(8 <= r.window[0] <= 16 for r in perfect)
    with pytest.raises(ValueError, match="tiling must be 'static' or 'dynamic'"):
        simulator.recommend((64,), 12, tiling="1d")
    with pytest.raises(ValueError, match="q_tiles must be a list of tile shapes"):
        simulator.recommend((64, 64), 12, q_tiles=(8, 8))
    with pytest.raises(ValueError, match="top must be an int >= 1"):
        simulator.recommend((64,), 12, top=0)
    with pytest.raises(ValueError, match="window_slack must be >= 0"):
        simulator.recommend((64,), 12, window_slack=-1)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tiling="2d"), "tiling must be one of"),
        (dict(input_shape=(8.0, 8)), "input_shape must be a sequence of ints"),
        (dict(input_shape=8), "input_shape must be a sequence of ints"),
        (dict(input_shape=(2, 2, 2, 2)), "1, 2 or 3 spatial axes"),
        (dict(window=1), "kernel_size must be >= 2"),
        (dict(window=(4, 4, 4)), "kernel_size must have one entry per spatial axis"),
        (dict(stride=0), "stride must be >= 1"),
        (dict(stride=5), "stride must be <= kernel_size"),
        (dict(dilation=3), "kernel_size \\* dilation must be <="),
        (dict(causal=(True,)), "is_causal must have one entry per spatial axis"),
        (dict(q_tile=(0, 4)), "q_tile entries must be positive"),
        (dict(kv_tile=(4,)), "kv_tile must have one entry per spatial axis"),
        (dict(kv_tile=(4, 2.0)), "kv_tile entries must be ints"),
        (dict(q_tile=(4, 4), tiling="1d"), "q_tile must be one positive int"),
        (dict(kv_tile=0, tiling="1d"), "kv_tile entries must be positive"),
    ],
)
def test_bad_input(kwargs, message):
    args = dict(input_shape=(10, 12), window=4, stride=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        simulator.simulate(**args)


def test_bad_q_tile_index():
    res = simulator.simulate((10, 12), 4, q_tile=(4, 4), kv_tile=(4, 4))
    with pytest.raises(ValueError, match=r"q_tile\[0\] must be in \[0, 3\)"):
        res.visited_kv_tiles((3, 0))
    with pytest.raises(ValueError, match="q_tile must be a tuple of 2 ints"):
        res.visited_kv_tiles(1)
    with pytest.raises(ValueError, match="group must be a tuple of 2 ints"):
        res.visited_kv_tiles((0, 0), 0)


def test_importable_without_jax():
    code = (
        "import sys; sys.modules['jax'] = None; sys.modules['jaxlib'] = None\n"
        "import simulator\n"
        "r = simulator.simulate((64, 64), 16, 8, q_tile=(8, 8), kv_tile=(8, 8))\n"
        "assert 'matplotlib' not in sys.modules\n"
        "print(r.speedup_bound)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(64 / 9)
