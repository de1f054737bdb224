"""The MACE model (Flax NNX): energies per graph, forces and stress by automatic differentiation."""

from __future__ import annotations

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_mace.data.graph import GraphBatch
from jax_mace.model.blocks import InteractionBlock, LinearReadout, MLPReadout, ProductBlock
from jax_mace.model.config import MACEConfig
from jax_mace.model.layers import SpeciesLinear, irrep_keys, normal_init
from jax_mace.model.radial import radial_embedding


def _parity_key(l: int) -> str:
    return f"{l}{'e' if l % 2 == 0 else 'o'}"


class MACE(nnx.Module):
    """MACE interatomic potential.

    Per layer ``t``: atomic basis ``A = Interaction(h)`` (``0e+1o+...`` up to ``max_ell``),
    ``h <- Linear(SymmetricContraction(A)) + SpeciesLinear(h)`` (the residual from the second
    layer on), node energy ``+= Readout_t(h)``. The node energy is
    ``E0[z] + scale * sum_t Readout_t + shift (+ learned offset[z])`` (eV); padding contributes
    nothing.
    """

    def __init__(self, config: MACEConfig, *, rngs: nnx.Rngs):
        self.config = nnx.static(config)
        c, hidden = config.channels_and_irreps()
        hidden_keys = irrep_keys(hidden)
        basis_keys = [_parity_key(l) for l in range(config.max_ell + 1)]
        s = config.num_species
        self.embedding = nnx.Param(normal_init(rngs, (s, c)))
        self.energy_shift = nnx.Param(jnp.zeros(s)) if config.learnable_shift else None
        interactions, products, skips, readouts = [], [], [], []
        keys_in = ["0e"]
        for t in range(config.num_interactions):
            last = t == config.num_interactions - 1
            keys_out = ["0e"] if last else hidden_keys
            residual = t > 0 or config.residual_first
            interactions.append(
                InteractionBlock(
                    keys_in,
                    basis_keys,
                    c,
                    config.max_ell,
                    config.num_bessel,
                    config.radial_mlp,
                    config.avg_num_neighbors,
                    s,
                    species_mix=not residual,
                    rngs=rngs,
                )
            )
            products.append(
                ProductBlock(
                    basis_keys,
                    keys_out,
                    c,
                    config.correlation,
                    s,
                    config.contraction_backend,
                    rngs=rngs,
                )
            )
            skip_keys = [k for k in keys_out if k in keys_in]
            skips.append(
                SpeciesLinear({k: c for k in keys_in}, {k: c for k in skip_keys}, s, rngs=rngs)
                if residual and skip_keys
                else None
            )
            if last:
                readouts.append(MLPReadout(c, config.readout_mlp, rngs=rngs))
            else:
                readouts.append(LinearReadout(c, rngs=rngs))
            keys_in = keys_out
        self.interactions = nnx.List(interactions)
        self.products = nnx.List(products)
        self.skips = nnx.List(skips)
        self.readouts = nnx.List(readouts)

    def node_energies(
        self,
        batch: GraphBatch,
        positions: jax.Array | None = None,
        cell: jax.Array | None = None,
        include_e0: bool = True,
    ) -> jax.Array:
        """``[n_node]`` energy of each atom (eV), zero on padding nodes.

        ``positions [n_node, 3]`` and ``cell [n_graph, 3, 3]`` override the batch's (used to
        differentiate with respect to them). ``include_e0=False`` leaves out the reference
        energies ``E0[z]``: training compares against labels with ``sum E0`` subtracted in
        float64, since float32 cannot resolve meV on totals of ~10^4 eV.
        """
        cfg = self.config
        positions = batch.positions if positions is None else positions
        dtype = positions.dtype
        species = batch.species
        onehot = jax.nn.one_hot(species, cfg.num_species, dtype=dtype)

        vec = positions[batch.receivers] - positions[batch.senders] + batch.edge_shifts(cell)
        # Masked edges get a harmless vector beyond the cutoff before any non-linearity, so that
        # neither values nor gradients see a zero length.
        far = jnp.array([2.0 * cfg.r_max, 0.0, 0.0], dtype)
        vec = jnp.where(batch.edge_mask[:, None], vec, far)
        length = jnp.linalg.norm(vec, axis=-1)
        radial = radial_embedding(length, cfg.r_max, cfg.num_bessel, cfg.num_polynomial_cutoff)
        radial = radial * batch.edge_mask[:, None].astype(dtype)
        sh_irreps = "+".join(_parity_key(l) for l in range(cfg.max_ell + 1))
        sh = e3nn.spherical_harmonics(
            sh_irreps, vec, normalize=True, normalization="component"
        ).array

        feats = {"0e": (onehot @ self.embedding[...].astype(dtype))[:, :, None]}
        inter = jnp.zeros(species.shape, dtype)
        for interaction, product, skip, readout in zip(
            self.interactions, self.products, self.skips, self.readouts, strict=True
        ):
            basis = interaction(feats, onehot, sh, radial, batch.senders, batch.receivers)
            sc = None if skip is None else skip(feats, onehot)
            feats = product(basis, species, sc)
            inter = inter + readout(feats)

        node_e = cfg.scale * inter + cfg.shift
        if self.energy_shift is not None:
            node_e = node_e + self.energy_shift[...].astype(dtype)[species]
        if include_e0:
            e0 = np.zeros(cfg.num_species) if cfg.e0s is None else np.asarray(cfg.e0s)
            node_e = node_e + jnp.asarray(e0, dtype)[species]
        return node_e * batch.node_mask.astype(dtype)

    def __call__(
        self,
        batch: GraphBatch,
        positions: jax.Array | None = None,
        cell: jax.Array | None = None,
        include_e0: bool = True,
    ) -> jax.Array:
        """``[n_graph]`` total energy per graph (eV), zero on padding graphs."""
        node_e = self.node_energies(batch, positions, cell, include_e0)
        energy = jax.ops.segment_sum(node_e, batch.node_graph, num_segments=batch.n_graph)
        return energy * batch.graph_mask.astype(energy.dtype)


def predict(
    model: MACE, batch: GraphBatch, compute_stress: bool = False, include_e0: bool = True
) -> dict[str, jax.Array]:
    """Energy ``[n_graph]`` (eV), forces ``-dE/dr [n_node, 3]`` (eV/A) and, if asked, stress
    ``(1/V) dE/d(strain) [n_graph, 3, 3]`` (eV/A^3, ASE sign; zero where the volume is zero)
    and virials ``-dE/d(strain)`` (eV).

    The strain is symmetric and acts on positions and cell: ``r -> r (1 + eps)``.
    ``include_e0=False`` gives energies without the reference energies (see
    :meth:`MACE.node_energies`).
    """
    positions = jnp.asarray(batch.positions)
    cell0 = jnp.asarray(batch.cell, positions.dtype)

    def total(pos, strain):
        sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
        pos = pos + jnp.einsum("ni,nij->nj", pos, sym[batch.node_graph])
        cell = cell0 + jnp.einsum("gij,gjk->gik", cell0, sym)
        energy = model(batch, positions=pos, cell=cell, include_e0=include_e0)
        return jnp.sum(energy), energy

    strain = jnp.zeros((batch.n_graph, 3, 3), positions.dtype)
    if not compute_stress:
        grad_pos, energy = jax.grad(total, has_aux=True)(positions, strain)
        return {"energy": energy, "forces": -grad_pos}
    (grad_pos, grad_strain), energy = jax.grad(total, argnums=(0, 1), has_aux=True)(
        positions, strain
    )
    volume = jnp.abs(jnp.linalg.det(cell0))
    safe = jnp.where(volume > 0, volume, 1.0)
    stress = jnp.where((volume > 0)[:, None, None], grad_strain / safe[:, None, None], 0.0)
    return {"energy": energy, "forces": -grad_pos, "stress": stress, "virials": -grad_strain}
