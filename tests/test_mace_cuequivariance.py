"""Optional cross-check against cuEquivariance's own symmetric contraction (CPU, naive method).

cuEquivariance and e3nn-jax share the real basis of the O(3) irreps (their Lie-algebra
generators are identical), but each picks its own basis inside the multiplicity spaces of the
coupling tensors, so weights don't map one to one. The test therefore compares the function
spaces: evaluated on random inputs, the polynomials of every unit weight vector of either side
span the same space (equal ranks, and the union adds nothing). Skipped without cuequivariance.
"""

import numpy as np
import pytest

cue = pytest.importorskip("cuequivariance")
cuex = pytest.importorskip("cuequivariance_jax")

import jax.numpy as jnp  # noqa: E402

from jax_mace.symmetric_contraction import build_path_list, symmetric_contraction  # noqa: E402

IRREPS_IN = "0e+1o+2e+3o"


def _rank(a):
    return np.linalg.matrix_rank(a, tol=1e-4 * np.abs(a).max())


@pytest.mark.parametrize("irreps_out", ["0e", "0e+1o", "0e+1o+2e"])
def test_same_polynomial_space_as_cuequivariance(irreps_out):
    poly = cue.descriptors.symmetric_contraction(
        cue.Irreps("O3", IRREPS_IN), cue.Irreps("O3", irreps_out), (1, 2, 3)
    )
    paths = build_path_list(IRREPS_IN, irreps_out, 3)
    w_cue = poly.inputs[0].irreps.dim
    assert w_cue == paths.num_weights  # 13 / 29 / 49
    n = 40  # n * M rows must exceed the number of weights
    x = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)

    # Every unit weight vector on every input point, in one batched call.
    w = np.repeat(np.eye(w_cue, dtype=np.float32), n, axis=0)
    xs = np.tile(x, (w_cue, 1))
    with cue.assume(cue.O3, cue.ir_mul):
        out = cuex.equivariant_polynomial(
            poly,
            [
                cuex.RepArray(poly.inputs[0].irreps, jnp.asarray(w)),
                cuex.RepArray(poly.inputs[1].irreps, jnp.asarray(xs)),
            ],
            method="naive",
        )
    theirs = np.asarray(out.array).reshape(w_cue, -1).T  # [n * M, W]

    ws = np.eye(paths.num_weights, dtype=np.float32)[:, :, None]  # [W (as species), W, C=1]
    species = np.repeat(np.arange(paths.num_weights), n)
    ours = symmetric_contraction(jnp.asarray(xs)[:, None, :], jnp.asarray(ws), species, paths)
    ours = np.asarray(ours)[:, 0, :].reshape(paths.num_weights, -1).T

    assert _rank(theirs) == _rank(ours) == paths.num_weights
    assert _rank(np.concatenate([theirs, ours], axis=1)) == paths.num_weights
