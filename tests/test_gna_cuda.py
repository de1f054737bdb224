"""GNA forward CUDA kernel: host-side tables/tiling (CPU) and kernel correctness (GPU-marked).

The CPU tests replay the kernel's index arithmetic over the launch tables in NumPy and check that
the visited (query, key) pairs are exactly the neighbourhood mask. The GPU tests compare the
kernel with a float64 brute-force masked attention on the same (rounded) inputs: 300 seeded
random configurations plus hand-picked edge cases, on both producers of the head_dim <= 128
kernel (TMA where the call allows it; cp.async forced with ``JAXK_GNA_FORCE_CPASYNC=1``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jax_gna import tiling
from simulator.geometry import make_params, neighborhood_mask, window

# ----------------------------------------------------------------------------------------------
# Random configurations (shared by the CPU and GPU sweeps)
# ----------------------------------------------------------------------------------------------

_MAX_LEN = {1: 600, 2: 26, 3: 10}


def random_config(seed: int, max_len: dict[int, int] | None = None) -> dict:
    """A random valid GNA problem: grid, window, stride, dilation, causal flags, heads, dtype."""
    rng = np.random.default_rng(seed)
    max_len = max_len or _MAX_LEN
    rank = int(rng.integers(1, 4))
    shape, w, s, d, c = [], [], [], [], []
    for _ in range(rank):
        n = int(rng.integers(2, max_len[rank] + 1))
        dil = int(rng.integers(2, max(3, n // 2 + 1))) if rng.random() < 0.25 else 1
        dil = min(dil, n // 2)
        dil = max(dil, 1)
        win = int(rng.integers(2, n // dil + 1))
        shape.append(n)
        w.append(win)
        s.append(int(rng.integers(1, win + 1)) if rng.random() < 0.6 else 1)
        d.append(dil)
        c.append(bool(rng.random() < 0.3))
    head_dim = int(rng.choice([32, 64, 128, 256], p=[0.25, 0.3, 0.3, 0.15]))
    heads_kv = int(rng.integers(1, 3))
    heads_q = heads_kv * int(rng.integers(1, 3))
    cfg = dict(
        params=make_params(shape, w, s, d, c),
        head_dim=head_dim,
        heads_q=heads_q,
        heads_kv=heads_kv,
        batch=int(rng.integers(1, 3)),
        dtype=str(rng.choice(["bfloat16", "float16"])),
        q_tile=None,
        kv_tile=None,
    )
    if rng.random() < 0.3:  # a random valid tile override
        qs = tiling._pow2_shapes(tiling.Q_BLOCK, rank, (tiling.Q_BLOCK,) * rank)
        ks = tiling._pow2_shapes(tiling.kv_block(head_dim), rank, (128,) * rank)
        cfg["q_tile"] = qs[int(rng.integers(len(qs)))]
        cfg["kv_tile"] = ks[int(rng.integers(len(ks)))]
    return cfg


# ----------------------------------------------------------------------------------------------
# CPU: the launch tables, replayed the way the kernel reads them
# ----------------------------------------------------------------------------------------------


def _tile_coords(shape3: tuple[int, int, int]) -> np.ndarray:
    """``[prod(shape3), 3]`` per-axis offsets of the rows of a tile (axis 2 fastest)."""
    return np.stack(np.unravel_index(np.arange(int(np.prod(shape3))), shape3), axis=1)


def emulate_kernel_pairs(plan: tiling.LaunchPlan) -> np.ndarray:
    """``[N, N]`` count of how often each (query, key) pair is accumulated by the kernel.

    Mirrors GnaFwdKernel: axis tiles -> Q rows, KV box -> key rows, window tables -> mask,
    ``[full_lo, full_hi)`` -> no mask (asserting that those tiles are really fully visible).
    """
    tab = plan.tables.astype(np.int64)
    n3, d3 = np.array(plan.spatial3), np.array(plan.dilation3)
    strides = np.array([n3[1] * n3[2], n3[2], 1])
    count = np.zeros((int(np.prod(n3)),) * 2, np.int64)
    q_off, kv_off = _tile_coords(plan.q_tile3), _tile_coords(plan.kv_tile3)
    for t in itertools.product(*[range(m) for m in plan.num_tiles]):
        ax = np.stack(
            [tab[plan.axis_offsets[a] + tiling.ENTRY * t[a] :][: tiling.ENTRY] for a in range(3)]
        )  # [3, 8]
        group, n_g, q_start, win_base = ax[:, 0], ax[:, 1], ax[:, 2], ax[:, 3]
        j = q_start + q_off  # [R, 3]
        valid = np.all(j < n_g, axis=1)
        jc = np.minimum(j, n_g - 1)
        lo, hi = tab[win_base + 2 * jc], tab[win_base + 2 * jc + 1]
        tok = ((j * d3 + group) * strides).sum(1)
        for kt in itertools.product(*[range(ax[a, 4], ax[a, 5]) for a in range(3)]):
            full = all(ax[a, 6] <= kt[a] < ax[a, 7] for a in range(3))
            jk = np.array(kt) * np.array(plan.kv_tile3) + kv_off  # [C, 3]
            in_grid = np.all(jk < n_g, axis=1)
            ktok = ((jk * d3 + group) * strides).sum(1)
            vis = np.all((jk[None] >= lo[:, None]) & (jk[None] < hi[:, None]), axis=2)
            assert not full or (vis.all() and in_grid.all()), "a 'full' tile needs a mask"
            assert not np.any(vis & ~in_grid[None]), "a padded key passes the mask"
            count[np.ix_(tok[valid], ktok[in_grid])] += vis[valid][:, in_grid]
    return count


@pytest.mark.parametrize("seed", range(100))
def test_tables_reproduce_neighborhood_mask(seed):
    cfg = random_config(1000 + seed, max_len={1: 300, 2: 20, 3: 8})
    params = cfg["params"]
    q_tile, kv_tile = cfg["q_tile"], cfg["kv_tile"]
    if q_tile is None:
        q_tile, kv_tile = tiling.choose_tiles(params, cfg["head_dim"])
    plan = tiling.make_plan(params, cfg["head_dim"], q_tile, kv_tile)
    count = emulate_kernel_pairs(plan)
    np.testing.assert_array_equal(count, neighborhood_mask(params).astype(np.int64))


def test_plan_matches_simulator():
    """The kernel's static tiling is the simulator's: same visited pairs, worst tile, Q tiles."""
    import simulator

    for seed in range(300):
        cfg = random_config(seed)
        p = cfg["params"]
        q_tile, kv_tile = cfg["q_tile"], cfg["kv_tile"]
        if q_tile is None:
            q_tile, kv_tile = tiling.choose_tiles(p, cfg["head_dim"])
        plan = tiling.make_plan(p, cfg["head_dim"], q_tile, kv_tile)
        sim = simulator.simulate(
            p.spatial_shape, p.kernel_size, p.stride, p.dilation, p.is_causal, q_tile, kv_tile
        )
        assert plan.kv_tiles_visited == sim.visited_tile_pairs
        assert plan.max_kv_tiles == sim.max_kv_tiles
        assert plan.q_tiles == sim.num_q_tiles
        # The kernel masks KV padding with the same code path, so "no mask" also needs no padding.
        if plan.block_sparse:
            assert sim.perfectly_block_sparse


@pytest.mark.parametrize(
    "shape,w,s,tile,visited,bound",
    [
        ((256, 256), (80, 80), (16, 16), (16, 8), 512 * 50, 10.24),  # FLUX-4K GNA
        ((30, 48, 80), (18, 24, 24), (16, 8, 8), (2, 8, 8), 900 * 81, 11.11),  # HunyuanVideo
        ((32768,), (2048,), (256,), (128,), 256 * 16, 16.0),
    ],
)
def test_paper_cases_are_block_sparse(shape, w, s, tile, visited, bound):
    plan = tiling.make_plan(make_params(shape, w, s), 128, tile, tile)
    assert plan.block_sparse
    assert plan.kv_tiles_visited == visited
    total = np.prod([-(-n // t) for n, t in zip(shape, tile, strict=True)])
    assert total / plan.max_kv_tiles == pytest.approx(bound, rel=1e-3)


def test_dense_window_visits_everything_unmasked():
    params = make_params((64, 64), 64)
    plan = tiling.make_plan(params, 128, (16, 8), (16, 8))
    assert plan.block_sparse and plan.kv_tiles_visited == 32 * 32


def test_policy_prefers_block_sparse_paper_tiles():
    q, kv = tiling.choose_tiles(make_params((30, 48, 80), (18, 24, 24), (16, 8, 8)), 128)
    plan = tiling.make_plan(make_params((30, 48, 80), (18, 24, 24), (16, 8, 8)), 128, q, kv)
    assert plan.block_sparse and plan.kv_tiles_visited == 900 * 81
    assert tiling.choose_tiles(make_params((4096,), 256), 256) == ((128,), (64,))


def _kv_footprint(plan, order, items: int) -> int:
    """Distinct KV tiles that the first ``items`` work items of one (batch, head) visit when the
    Q tiles are numbered along ``order`` (fastest axis first), decoded as the kernel does."""
    entries = [
        plan.tables[off : off + 8 * m].reshape(m, 8)
        for off, m in zip(plan.axis_offsets, plan.num_tiles, strict=True)
    ]
    seen = set()
    for work in range(items):
        idx = [0, 0, 0]
        for a in order:
            work, idx[a] = divmod(work, plan.num_tiles[a])
        boxes = [range(entries[a][idx[a], 4], entries[a][idx[a], 5]) for a in range(3)]
        seen.update(itertools.product(*boxes))
    return len(seen)


@pytest.mark.parametrize(
    "shape,w,d,order",
    [
        ((30, 48, 80), (18, 24, 24), 1, (0, 1, 2)),  # HunyuanVideo: axis 2 (24 of 80) slowest
        ((256, 256), (80, 80), 1, (0, 2, 1)),  # a tie keeps axis 2 fastest
        ((64, 1024), (32, 32), 1, (0, 1, 2)),
        ((64, 64), (8, 8), (4, 1), (0, 1, 2)),  # dilation widens axis 1's span to 32 of 64
        ((4096,), 256, 1, (1, 0, 2)),
    ],
)
def test_tile_order_puts_the_narrowest_window_slowest(shape, w, d, order):
    params = make_params(shape, w, 1, d)
    assert tiling.tile_order(params) == order
    q, kv = tiling.choose_tiles(params, 128)
    assert tiling.make_plan(params, 128, q, kv).tile_order == order


@pytest.mark.parametrize("stride", [(16, 8, 8), (1, 1, 1)])
def test_tile_order_shrinks_the_kv_the_running_ctas_read(stride):
    """HunyuanVideo GNA and NA: the first wave of 132 work items reads at most 60% of the KV
    tiles it would with axis 2 fastest."""
    params = make_params((30, 48, 80), (18, 24, 24), stride)
    plan = tiling.make_plan(params, 128, *tiling.choose_tiles(params, 128))
    chosen = _kv_footprint(plan, plan.tile_order, 132)
    assert chosen <= 0.6 * _kv_footprint(plan, (2, 1, 0), 132)


@pytest.mark.parametrize(
    "q_tile,kv_tile,match",
    [
        ((16, 4), (16, 8), "exactly 128"),
        ((12, 8), (16, 8), "powers of two"),
        ((128,), (128,), "one entry"),
    ],
)
def test_tile_validation(q_tile, kv_tile, match):
    with pytest.raises(ValueError, match=match):
        tiling.make_plan(make_params((32, 32), 8), 128, q_tile, kv_tile)


def test_unsupported_reasons():
    from jax_gna import cuda_backend

    p = make_params((16, 16), 4)
    shape = (1, 16, 16, 2, 64)
    assert "reference path" in cuda_backend.unsupported_reason(shape, shape, shape, "float32", p)
    bad = (1, 16, 16, 2, 48)
    assert "head_dim 48" in cuda_backend.unsupported_reason(bad, bad, bad, "bfloat16", p)
    gqa = (1, 16, 16, 3, 64)
    assert "multiple" in cuda_backend.unsupported_reason(shape, gqa, gqa, "bfloat16", p)


# ----------------------------------------------------------------------------------------------
# GPU: the kernel against a float64 brute force
# ----------------------------------------------------------------------------------------------

_TOL = {"bfloat16": 5e-2, "float16": 1e-2}


def brute_force(q, k, v, params, scale):
    """Dense masked attention in float64 (NumPy): ``(out, lse)`` for ``[B, *spatial, H, D]``."""
    b, h, hk, dim = q.shape[0], q.shape[-2], k.shape[-2], q.shape[-1]
    n = int(np.prod(params.spatial_shape))
    qf = q.astype(np.float64).reshape(b, n, h, dim)
    kf = np.repeat(k.astype(np.float64).reshape(b, n, hk, dim), h // hk, axis=2)
    vf = np.repeat(v.astype(np.float64).reshape(b, n, hk, dim), h // hk, axis=2)
    mask = neighborhood_mask(params)
    s = np.einsum("bqhd,bkhd->bhqk", qf, kf) * scale
    s = np.where(mask[None, None], s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - m)
    den = e.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", e / den, vf)
    lse = (m + np.log(den))[..., 0].transpose(0, 2, 1)
    shape = q.shape[:-2]
    return out.reshape(*shape, h, dim), lse.reshape(*shape, h)


def _inputs(cfg, seed):
    """Unit-normal q, k, v drawn on the host (no per-shape compilation), then put on device."""
    import jax.numpy as jnp

    p = cfg["params"]
    dtype = jnp.dtype(cfg["dtype"])
    rng = np.random.default_rng(seed)
    qs = (cfg["batch"], *p.spatial_shape, cfg["heads_q"], cfg["head_dim"])
    ks = (cfg["batch"], *p.spatial_shape, cfg["heads_kv"], cfg["head_dim"])
    return tuple(
        jnp.asarray(rng.standard_normal(s, dtype=np.float32).astype(dtype)) for s in (qs, ks, ks)
    )


def check_config(cfg, seed=0, scale=None):
    from jax_gna import cuda_backend

    q, k, v = _inputs(cfg, seed)
    scale = cfg["head_dim"] ** -0.5 if scale is None else scale
    out, lse = cuda_backend.gna_forward_cuda(
        q, k, v, cfg["params"], scale, q_tile=cfg["q_tile"], kv_tile=cfg["kv_tile"]
    )
    ref_out, ref_lse = brute_force(
        np.asarray(q), np.asarray(k), np.asarray(v), cfg["params"], scale
    )
    out = np.asarray(out).astype(np.float32)
    lse = np.asarray(lse)
    assert out.dtype == np.float32 and np.all(np.isfinite(out)) and np.all(np.isfinite(lse))
    tol = _TOL[cfg["dtype"]]
    np.testing.assert_allclose(out, ref_out, atol=tol, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-2, rtol=0)


@pytest.fixture(params=["tma", "cpasync"])
def producer(request, monkeypatch):
    """Runs a test on the TMA producer (where the call allows it) and on the forced cp.async one.

    The FFI handler reads the variable at every call, so no recompilation is involved.
    """
    if request.param == "cpasync":
        monkeypatch.setenv("JAXK_GNA_FORCE_CPASYNC", "1")
    else:
        monkeypatch.delenv("JAXK_GNA_FORCE_CPASYNC", raising=False)
    return request.param


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(300))
def test_random_configs(seed):
    check_config(random_config(seed), seed)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(0, 300, 4))
def test_random_configs_cpasync(seed, monkeypatch):
    monkeypatch.setenv("JAXK_GNA_FORCE_CPASYNC", "1")
    check_config(random_config(seed), seed)


def _edge(shape, w, s=1, d=1, c=False, head_dim=64, dtype="bfloat16", hq=2, hk=2, b=1, tiles=None):
    return dict(
        params=make_params(shape, w, s, d, c),
        head_dim=head_dim,
        heads_q=hq,
        heads_kv=hk,
        batch=b,
        dtype=dtype,
        q_tile=tiles[0] if tiles else None,
        kv_tile=tiles[1] if tiles else None,
    )


EDGE_CASES = {
    "1d_w_eq_n_odd": _edge((17,), 17),
    "1d_s_eq_w": _edge((67,), 5, 5),
    "1d_large_dilation": _edge((125,), 7, 1, 17),
    "1d_causal_strided": _edge((300,), 50, 10, 1, True),
    "1d_tiny": _edge((2,), 2),
    "1d_long_partial": _edge((1000,), 129, 3, 2, False, 128),
    "2d_w_eq_n": _edge((17, 23), (17, 23)),
    "2d_s_eq_w_partial": _edge((67, 17), (5, 8), (5, 8)),
    "2d_dilated_causal": _edge((40, 33), (6, 5), (2, 1), (3, 4), (True, False)),
    "3d_partial_all_axes": _edge((3, 9, 11), (2, 4, 5), tiles=((2, 8, 8), (2, 8, 8))),
    "3d_w_eq_n": _edge((5, 6, 7), (5, 6, 7), head_dim=128),
    "3d_s_eq_w": _edge((8, 12, 10), (4, 6, 5), (4, 6, 5), head_dim=128),
    "gqa": _edge((20, 20), 7, 2, hq=6, hk=2),
    "mqa": _edge((20, 20), 7, 1, hq=4, hk=1, dtype="float16"),
    "batch3": _edge((33,), 9, 2, b=3),
}
for _c in itertools.product([False, True], repeat=3):
    EDGE_CASES["3d_causal_" + "".join("T" if x else "F" for x in _c)] = _edge(
        (6, 10, 13), (3, 4, 5), (1, 2, 3), (2, 1, 2), _c
    )
for _dt in ("bfloat16", "float16"):
    for _hd in tiling.SUPPORTED_HEAD_DIMS:
        EDGE_CASES[f"dims_{_dt}_{_hd}"] = _edge(
            (9, 21), (5, 8), (2, 3), (1, 2), (False, True), _hd, _dt
        )


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases(name, producer):
    check_config(EDGE_CASES[name], seed=len(name))


# Dilation 1, head_dim <= 128: the TMA producer's boxes (zero-filled past the grid on every axis,
# batch a separate tensor-map axis, GQA head columns).
TMA_CASES = {
    "1d_partial": _edge((300,), 37, 3, head_dim=128, b=2),
    "1d_shorter_than_tile": _edge((50,), 9, head_dim=64),
    "2d_partial_both": _edge((37, 29), (7, 9), (2, 3), head_dim=128, hq=4, hk=2, b=2),
    "2d_tile_past_axis0": _edge((5, 40), (3, 9), head_dim=64, tiles=((8, 16), (8, 16))),
    "3d_partial_batch": _edge((5, 9, 11), (3, 4, 5), head_dim=128, b=3, tiles=((2, 8, 8),) * 2),
    # KV boxes of 4 along an axis 0 of length 3: past n0 must read zeros, not the next batch entry.
    "3d_box_past_n0": _edge((3, 6, 10), 3, head_dim=64, b=2, tiles=((4, 4, 8), (4, 4, 8))),
    "3d_causal_gqa": _edge((6, 10, 13), (3, 4, 5), (1, 2, 3), 1, True, 128, hq=6, hk=2),
    "mqa_f16_d32": _edge((24, 24), 9, 4, head_dim=32, dtype="float16", hq=4, hk=1, b=2),
    "bf16_d32": _edge((7, 11, 9), (3, 5, 3), head_dim=32, hq=2, hk=2),
    "f16_d128_dense": _edge((16, 24), (16, 24), head_dim=128, dtype="float16"),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(TMA_CASES))
def test_tma_cases(name, producer):
    check_config(TMA_CASES[name], seed=len(name) + 1)


# Every KV tile shape (every split of a tile's row bits between the axes: where each axis's
# coordinate sits in a KV-tile row) on grids with windows that mask most tiles, for 128-row
# (head_dim <= 128) and 64-row (head_dim 256) KV tiles: the kernels' per-row column masks
# (ColumnMasks in fwd_softmax.cuh) against the reference.
_MASK_GRIDS = {
    1: ((300,), (37,), (False,), (128,)),
    2: ((20, 28), (5, 9), (False, False), (8, 16)),
    3: ((6, 10, 12), (3, 5, 7), (False, True, False), (2, 8, 8)),
}
KV_TILE_SWEEP = [
    (head_dim, rank, kv_tile)
    for head_dim in (64, 256)
    for rank in (1, 2, 3)
    for kv_tile in tiling._pow2_shapes(tiling.kv_block(head_dim), rank, (128,) * rank)
]


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim,rank,kv_tile", KV_TILE_SWEEP)
def test_masks_every_kv_tile_shape(head_dim, rank, kv_tile):
    shape, w, causal, q_tile = _MASK_GRIDS[rank]
    cfg = _edge(shape, w, c=causal, head_dim=head_dim, tiles=(q_tile, kv_tile))
    check_config(cfg, seed=sum(kv_tile))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "cfg,force,expect",
    [
        (TMA_CASES["2d_partial_both"], False, "TMA producer"),
        (EDGE_CASES["dims_bfloat16_32"], False, "cp.async producer: dilation > 1"),
        (TMA_CASES["2d_partial_both"], True, "cp.async producer: forced by JAXK_GNA_FORCE_CPASYNC"),
    ],
)
def test_producer_report(cfg, force, expect, monkeypatch, capfd):
    """JAXK_GNA_DEBUG=1 makes the FFI handler report which producer each call runs."""
    monkeypatch.setenv("JAXK_GNA_DEBUG", "1")
    if force:
        monkeypatch.setenv("JAXK_GNA_FORCE_CPASYNC", "1")
    else:
        monkeypatch.delenv("JAXK_GNA_FORCE_CPASYNC", raising=False)
    check_config(cfg)
    assert expect in capfd.readouterr().err


# More work items than an H100/H200 has SMs, with KV-tile counts that differ between work items
# (windows clipped at the borders, causal), so persistent CTAs run several of each kind.
PERSISTENT_CASES = {
    "2d_na_borders": _edge((48, 64), (13, 11), head_dim=128, hq=4, hk=2, b=2),
    "1d_causal_many": _edge((4096,), 300, 1, 1, True, 64, hq=3, hk=1, b=2),
    "3d_strided_f16": _edge((4, 16, 32), (3, 9, 7), (1, 2, 3), head_dim=32, dtype="float16", hq=10),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(PERSISTENT_CASES))
def test_persistent_matches_one_cta_per_tile(name, monkeypatch):
    """The persistent TMA kernel (default: one CTA per SM walking several work items) gives the
    same bits as one CTA per work item (JAXK_GNA_PERSISTENT=0), and both match the brute force."""
    from jax_gna import cuda_backend

    cfg = PERSISTENT_CASES[name]
    q, k, v = _inputs(cfg, 3)
    scale = cfg["head_dim"] ** -0.5

    def run():
        out, lse = cuda_backend.gna_forward_cuda(q, k, v, cfg["params"], scale)
        return np.asarray(out), np.asarray(lse)

    monkeypatch.delenv("JAXK_GNA_FORCE_CPASYNC", raising=False)
    monkeypatch.delenv("JAXK_GNA_PERSISTENT", raising=False)
    out, lse = run()
    monkeypatch.setenv("JAXK_GNA_PERSISTENT", "0")
    one_out, one_lse = run()
    np.testing.assert_array_equal(out, one_out)
    np.testing.assert_array_equal(lse, one_lse)
    check_config(cfg, seed=3)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "cfg,force_cpasync",
    [
        (PERSISTENT_CASES["3d_strided_f16"], False),  # persistent TMA kernel
        (PERSISTENT_CASES["3d_strided_f16"], True),  # cp.async producer
        (_edge((4, 16, 32), (3, 9, 7), (1, 2, 3), head_dim=256), False),  # head_dim 256
    ],
)
def test_tile_order_gives_the_same_bits(cfg, force_cpasync, monkeypatch, capfd):
    """Numbering the Q tiles along the chosen order (here axis 0 fastest, axis 2 slowest) or axis
    2 fastest (JAXK_GNA_TILE_ORDER=raster) moves work items between CTAs, not results."""
    from jax_gna import cuda_backend

    assert tiling.tile_order(cfg["params"]) == (0, 1, 2)
    q, k, v = _inputs(cfg, 5)
    scale = cfg["head_dim"] ** -0.5

    def run():
        out, lse = cuda_backend.gna_forward_cuda(q, k, v, cfg["params"], scale)
        return np.asarray(out), np.asarray(lse)

    monkeypatch.setenv("JAXK_GNA_DEBUG", "1")
    if force_cpasync:
        monkeypatch.setenv("JAXK_GNA_FORCE_CPASYNC", "1")
    else:
        monkeypatch.delenv("JAXK_GNA_FORCE_CPASYNC", raising=False)
    monkeypatch.delenv("JAXK_GNA_TILE_ORDER", raising=False)
    out, lse = run()
    assert "Q tiles numbered axis 0 fastest, then 1, then 2" in capfd.readouterr().err
    monkeypatch.setenv("JAXK_GNA_TILE_ORDER", "raster")
    raster_out, raster_lse = run()
    assert "Q tiles numbered axis 2 fastest, then 1, then 0" in capfd.readouterr().err
    np.testing.assert_array_equal(out, raster_out)
    np.testing.assert_array_equal(lse, raster_lse)
    monkeypatch.delenv("JAXK_GNA_TILE_ORDER")
    check_config(cfg, seed=5)


@pytest.mark.gpu
@pytest.mark.parametrize("order", [(0, 0, 2), (0, 1, 3), (-1, 1, 2)])
def test_handler_rejects_a_tile_order_that_is_no_permutation(order, monkeypatch):
    """The FFI handler checks the tile order itself: a plan whose order is not a permutation of
    0, 1, 2 (unreachable through tiling.make_plan) is refused before any launch."""
    import dataclasses

    import jax

    from jax_gna import cuda_backend

    cfg = PERSISTENT_CASES["3d_strided_f16"]
    q, k, v = _inputs(cfg, 1)
    make_plan = tiling.make_plan

    def bad_plan(*args, **kwargs):
        return dataclasses.replace(make_plan(*args, **kwargs), tile_order=order)

    monkeypatch.setattr(tiling, "make_plan", bad_plan)
    with pytest.raises(jax.errors.JaxRuntimeError, match="tile_order must be a permutation"):
        out, _ = cuda_backend.gna_forward_cuda(q, k, v, cfg["params"], 0.125)
        out.block_until_ready()


@pytest.mark.gpu
@pytest.mark.parametrize("persistent", ["1", "0"])
def test_persistent_report(persistent, monkeypatch, capfd):
    """JAXK_GNA_DEBUG=1 reports the persistent launch (and its absence when switched off)."""
    monkeypatch.setenv("JAXK_GNA_DEBUG", "1")
    monkeypatch.delenv("JAXK_GNA_FORCE_CPASYNC", raising=False)
    monkeypatch.setenv("JAXK_GNA_PERSISTENT", persistent)
    check_config(PERSISTENT_CASES["2d_na_borders"])
    err = capfd.readouterr().err
    assert "TMA producer" in err
    assert ("persistent (" in err) == (persistent == "1")


@pytest.mark.gpu
@pytest.mark.parametrize("ramp", ["rising", "falling", "steps"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_growing_row_maximum(ramp, dtype):
    """Keys scaled along the sequence so that a row's maximum grows by more than the kernel's
    rebase threshold (2^8) from one KV tile to the next (rising: the base is raised and the output
    rescaled on later tiles), never grows (falling: every later tile keeps the first base), or
    grows in steps just below and above it (steps)."""
    import jax.numpy as jnp

    from jax_gna import cuda_backend

    n, dim = 1024, 64
    params = make_params((n,), 640, 1)
    t = np.arange(n) / n
    steps = 1 + 1.5 * (np.arange(n) // 128)
    factor = {"rising": 1 + 12 * t, "falling": 13 - 12 * t, "steps": steps}
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, n, 2, dim), dtype=np.float32) for _ in range(3))
    k *= factor[ramp][None, :, None, None]
    q, k, v = (np.asarray(jnp.asarray(a, jnp.dtype(dtype))) for a in (q, k, v))
    scale = dim**-0.5
    out, lse = cuda_backend.gna_forward_cuda(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), params, scale, (128,), (128,)
    )
    ref_out, ref_lse = brute_force(q, k, v, params, scale)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref_out, atol=_TOL[dtype], rtol=0)
    np.testing.assert_allclose(np.asarray(lse), ref_lse, atol=1e-2, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("scale", [-0.3, 0.0, 1.7])
def test_any_scale(scale):
    check_config(EDGE_CASES["2d_dilated_causal"], seed=5, scale=scale)


@pytest.mark.gpu
def test_api_jit_vmap_grad():
    import jax
    import jax.numpy as jnp

    import jax_gna
    from jax_gna import cuda_backend
    from jax_gna.reference import gna_reference

    cfg = _edge((12, 20), (5, 7), (2, 3), head_dim=64, hq=4, hk=2, b=2)
    p = cfg["params"]
    q, k, v = _inputs(cfg, 7)
    scale = 0.125
    ref_out, ref_lse = brute_force(np.asarray(q), np.asarray(k), np.asarray(v), p, scale)

    out = jax_gna.neighborhood_attention(q, k, v, (5, 7), (2, 3), scale=scale, backend="cuda")
    np.testing.assert_allclose(np.asarray(out, np.float32), ref_out, atol=5e-2)

    fwd = jax.jit(lambda q, k, v: cuda_backend.gna_forward_cuda(q, k, v, p, scale))
    out, lse = fwd(q, k, v)
    np.testing.assert_allclose(np.asarray(lse), ref_lse, atol=1e-2)

    # vmap over a leading axis folds into the batch: same numbers as the unbatched calls.
    qs, ks, vs = (jnp.stack([x, x[::-1]]) for x in (q, k, v))
    vout, vlse = jax.vmap(lambda q, k, v: cuda_backend.gna_forward_cuda(q, k, v, p, scale))(
        qs, ks, vs
    )
    np.testing.assert_array_equal(np.asarray(vout[0]), np.asarray(out))
    np.testing.assert_array_equal(np.asarray(vlse[0]), np.asarray(lse))
    # vmap with an unbatched key/value
    vout2, _ = jax.vmap(lambda q: cuda_backend.gna_forward_cuda(q, k, v, p, scale), in_axes=0)(qs)
    np.testing.assert_array_equal(np.asarray(vout2[0]), np.asarray(out))

    # Gradients: the reference's VJP.
    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v)[0].astype(jnp.float32) ** 2)

    got = jax.grad(
        loss(lambda q, k, v: cuda_backend.gna_forward_cuda(q, k, v, p, scale)), (0, 1, 2)
    )(q, k, v)
    want = jax.grad(loss(lambda q, k, v: gna_reference(q, k, v, p, scale)), (0, 1, 2))(q, k, v)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(
            np.asarray(g, np.float32), np.asarray(w, np.float32), atol=0.25, rtol=0.05
        )


@pytest.mark.gpu
def test_backend_cuda_raises_on_unsupported():
    import jax.numpy as jnp

    import jax_gna

    x = jnp.zeros((1, 16, 16, 2, 48), jnp.bfloat16)
    with pytest.raises(ValueError, match="head_dim 48"):
        jax_gna.neighborhood_attention(x, x, x, 4, backend="cuda")


@pytest.mark.gpu
def test_64bit_offsets():
    """q holds more than 2^31 elements; check the tail of the last batch entry and head."""
    import jax
    import jax.numpy as jnp

    from jax_gna import cuda_backend

    b, n, h, dim, w = 2, 2**20 + 5, 8, 128, 8
    assert b * n * h * dim > 2**31
    params = make_params((n,), w)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    q, k, v = (
        jax.random.normal(kk, (b, n, h, dim), jnp.float32).astype(jnp.bfloat16) for kk in keys
    )
    out, lse = cuda_backend.gna_forward_cuda(q, k, v, params, dim**-0.5)
    tail = 300
    qi = np.arange(n - tail, n)
    start, end = window(qi, n, w, 1, False)
    qt = np.asarray(q[-1, n - tail :, -1].astype(jnp.float32), np.float64)
    kt = np.asarray(k[-1, n - tail - w :, -1].astype(jnp.float32), np.float64)
    vt = np.asarray(v[-1, n - tail - w :, -1].astype(jnp.float32), np.float64)
    keys_idx = np.arange(n - tail - w, n)
    s = qt @ kt.T * dim**-0.5
    vis = (keys_idx[None] >= start[:, None]) & (keys_idx[None] < end[:, None])
    s = np.where(vis, s, -np.inf)
    m = s.max(1, keepdims=True)
    e = np.exp(s - m)
    ref = (e / e.sum(1, keepdims=True)) @ vt
    got = np.asarray(out[-1, n - tail :, -1].astype(jnp.float32))
    np.testing.assert_allclose(got, ref, atol=5e-2)
    ref_lse = m[:, 0] + np.log(e.sum(1))
    np.testing.assert_allclose(np.asarray(lse[-1, n - tail :, -1]), ref_lse, atol=1e-2)
