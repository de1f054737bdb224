"""MACE blocks: interaction (message passing), product basis, readouts."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_mace.model.layers import (
    MLP,
    Features,
    IrrepsLinear,
    SpeciesLinear,
    split_components,
    stack_components,
)
from jax_mace.symmetric_contraction import SymmetricContraction


@functools.cache
def _cg(l1: int, l2: int, l3: int) -> np.ndarray:
    """Clebsch-Gordan ``[2l1+1, 2l2+1, 2l3+1]`` scaled so unit-variance inputs give unit-variance
    outputs (component normalization)."""
    return np.asarray(e3nn.clebsch_gordan(l1, l2, l3), np.float32) * np.sqrt(2 * l3 + 1)


def tensor_product_paths(
    keys_in: Sequence[str], max_ell: int, keys_out: Sequence[str]
) -> list[tuple[str, int, str]]:
    """Channel-wise paths ``(irrep_in, l of Y, irrep_out)`` with the output in ``keys_out``."""
    paths = []
    for k1 in keys_in:
        ir1 = e3nn.Irrep(k1)
        for l2 in range(max_ell + 1):
            ir2 = e3nn.Irrep(l2, (-1) ** l2)
            for ir3 in ir1 * ir2:
                if str(ir3) in keys_out:
                    paths.append((k1, l2, str(ir3)))
    return paths


class InteractionBlock(nnx.Module):
    """Messages ``m_i = 1/avg_nbr * Linear(sum_j R(r_ij) * (Linear_up(h_j) x Y(r_ij)))``.

    Node features ``{ir: [N, C, d]}`` over ``keys_in`` -> atomic basis ``{ir: [N, C, d]}`` over
    ``keys_out`` (``0e, 1o, 2e, 3o, ...`` up to ``max_ell``). With ``species_mix`` the result goes
    through a species-dependent linear (MACE's first, non-residual interaction).
    """

    def __init__(
        self,
        keys_in: Sequence[str],
        keys_out: Sequence[str],
        num_channels: int,
        max_ell: int,
        num_bessel: int,
        radial_mlp: Sequence[int],
        avg_num_neighbors: float,
        num_species: int,
        species_mix: bool,
        *,
        rngs: nnx.Rngs,
    ):
        c = num_channels
        self.paths = nnx.static(tuple(tensor_product_paths(keys_in, max_ell, keys_out)))
        reached = {p[2] for p in self.paths}
        if set(keys_out) - reached:
            raise ValueError(f"InteractionBlock: outputs {set(keys_out) - reached} unreachable")
        self.keys_out = nnx.static(tuple(keys_out))
        self.avg_num_neighbors = nnx.static(float(avg_num_neighbors))
        self.linear_up = IrrepsLinear({k: c for k in keys_in}, {k: c for k in keys_in}, rngs=rngs)
        self.radial = MLP([num_bessel, *radial_mlp, len(self.paths) * c], rngs=rngs)
        mid = {k: c * sum(p[2] == k for p in self.paths) for k in keys_out}
        self.linear = IrrepsLinear(mid, {k: c for k in keys_out}, rngs=rngs)
        mul_out = {k: c for k in keys_out}
        self.species_mix = (
            SpeciesLinear(mul_out, mul_out, num_species, rngs=rngs) if species_mix else None
        )

    def __call__(
        self,
        feats: Features,
        species_onehot: jax.Array,
        sh: jax.Array,
        radial: jax.Array,
        senders: jax.Array,
        receivers: jax.Array,
    ) -> Features:
        """``sh [E, (max_ell+1)^2]`` edge harmonics, ``radial [E, num_bessel]`` (zero on masked
        edges); features ``{ir: [N, C, d]}``."""
        n_node = species_onehot.shape[0]
        layout = _path_layout(self.paths, sh.shape[-1])
        x = self.linear_up(feats)
        w = self.radial(radial)
        w = w.reshape(w.shape[0], len(self.paths), -1)  # [E, paths, C]
        pieces = []
        for k1, cg_big, path_ids, offsets in layout.by_input:
            # All paths from irrep k1 at once: y[e, m1, q] couples Y(r_e) into output slot q.
            y = jnp.einsum("ej,mjq->emq", sh, cg_big.astype(sh.dtype))
            xs = x[k1][senders]  # [E, C, d1]
            msg = sum(xs[:, :, m, None] * y[:, None, m, :] for m in range(xs.shape[-1]))
            for p, (o0, o1) in zip(path_ids, offsets, strict=True):
                pieces.append(msg[:, :, o0:o1] * w[:, p, :, None])
        msgs = jnp.concatenate(pieces, axis=-1)  # [E, C, Q]
        agg = jax.ops.segment_sum(msgs, receivers, num_segments=n_node)  # [N, C, Q]
        mids = {
            k: jnp.concatenate([agg[:, :, o0:o1] for o0, o1 in spans], axis=1)
            for k, spans in layout.by_output.items()
        }
        out = self.linear(mids)
        out = {k: v / self.avg_num_neighbors for k, v in out.items()}
        if self.species_mix is not None:
            out = self.species_mix(out, species_onehot)
        return out


class _Layout(NamedTuple):
    by_input: tuple  # (k1, cg_big [d1, n_sh, Q_k1], path ids, (start, stop) in the message)
    by_output: dict  # k3 -> [(start, stop)] slices of the concatenated messages, path order


@functools.cache
def _path_layout(paths: tuple[tuple[str, int, str], ...], n_sh: int) -> _Layout:
    """Group tensor-product paths by input irrep; place outputs side by side."""
    by_input, by_output = [], {}
    pos = 0
    for k1 in dict.fromkeys(p[0] for p in paths):
        l1 = e3nn.Irrep(k1).l
        ids = [i for i, p in enumerate(paths) if p[0] == k1]
        q = sum(e3nn.Irrep(paths[i][2]).dim for i in ids)
        cg_big = np.zeros((2 * l1 + 1, n_sh, q), np.float32)
        offsets, o = [], 0
        for i in ids:
            _, l2, k3 = paths[i]
            d3 = e3nn.Irrep(k3).dim
            cg_big[:, l2 * l2 : (l2 + 1) ** 2, o : o + d3] = _cg(l1, l2, e3nn.Irrep(k3).l)
            offsets.append((o, o + d3))
            o += d3
        by_input.append((k1, cg_big, tuple(ids), tuple(offsets)))
        for i, (o0, o1) in zip(ids, offsets, strict=True):
            by_output.setdefault(paths[i][2], []).append((i, pos + o0, pos + o1))
        pos += q
    ordered = {k: [(a, b) for _, a, b in sorted(v)] for k, v in by_output.items()}
    return _Layout(tuple(by_input), ordered)


class ProductBlock(nnx.Module):
    """Symmetric contraction of the atomic basis, an equivariant linear, and the residual."""

    def __init__(
        self,
        keys_in: Sequence[str],
        keys_out: Sequence[str],
        num_channels: int,
        correlation: int,
        num_species: int,
        backend: str | None,
        *,
        rngs: nnx.Rngs,
    ):
        self.keys_in = nnx.static(tuple(keys_in))
        self.keys_out = nnx.static(tuple(keys_out))
        self.contraction = SymmetricContraction(
            "+".join(keys_in),
            "+".join(keys_out),
            correlation,
            num_species,
            num_channels,
            backend=backend,
            rngs=rngs,
        )
        c = num_channels
        self.linear = IrrepsLinear({k: c for k in keys_out}, {k: c for k in keys_out}, rngs=rngs)

    def __call__(self, basis: Features, species: jax.Array, skip: Features | None) -> Features:
        b = self.contraction(stack_components(basis, self.keys_in), species)
        out = self.linear(split_components(b, self.keys_out))
        if skip is not None:
            out = {k: v + skip[k] if k in skip else v for k, v in out.items()}
        return out


class LinearReadout(nnx.Module):
    """Node scalars ``[N, C, 1]`` -> ``[N]`` energy contribution."""

    def __init__(self, num_channels: int, *, rngs: nnx.Rngs):
        self.linear = IrrepsLinear({"0e": num_channels}, {"0e": 1}, rngs=rngs)

    def __call__(self, feats: Features) -> jax.Array:
        return self.linear({"0e": feats["0e"]})["0e"][:, 0, 0]


class MLPReadout(nnx.Module):
    """Node scalars ``[N, C, 1]`` -> MLP (SiLU, one hidden layer) -> ``[N]``."""

    def __init__(self, num_channels: int, hidden: int, *, rngs: nnx.Rngs):
        self.mlp = MLP([num_channels, hidden, 1], rngs=rngs)

    def __call__(self, feats: Features) -> jax.Array:
        return self.mlp(feats["0e"][:, :, 0])[:, 0]
