"""The symmetric contraction and its derivatives as explicit sparse polynomials.

The specialised CUDA backend (:mod:`.jit`) generates one straight-line kernel per *program*:
per ``(node, channel)`` it reads a few *node* arrays ``[N, C, k]`` and *species* arrays
``[S, k, C]`` (rows gathered by the node's species), evaluates polynomials in those values and
writes *node outputs* ``[N, C, m]`` and *species outputs* ``[S, m, C]`` (sums over the nodes of
each species). This module derives the three programs from a :class:`~.paths.PathList` with exact
symbolic differentiation, so every derivative the contraction needs is again a polynomial:

- ``fwd``: node ``[x]``, species ``[W]`` -> node ``[out]``, where
  ``out_o = sum_p coeff_p W_{w_p} x_{a_p} x_{b_p} x_{k_p}``;
- ``bwd`` (VJP for the cotangent ``g`` of ``out``): node ``[x, g]``, species ``[W]`` ->
  node ``[gx]``, species ``[gW]``; ``bwd_x``: the same without ``gW`` (weights that need no
  gradient);
- ``bwd2`` (VJP of ``bwd`` for cotangents ``hx, hW`` of ``gx, gW``): node ``[x, g, hx]``,
  species ``[W, hW]`` -> node ``[dx, dg]``, species ``[dW]``.

A polynomial is a dict ``{monomial: coefficient}``; a monomial is a sorted tuple of variable ids
(repeats allowed). :func:`evaluate` is the NumPy meaning of a program (CPU tests compare it with
autodiff of the pure-JAX reference).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict

import numpy as np

from jax_mace.symmetric_contraction.paths import PathList

Poly = dict  # {tuple[int, ...]: float}

_NODE_STRIDE = 1 << 10  # variable id = array * stride + component (+ _SPECIES_BASE)
_SPECIES_BASE = 1 << 20


def node_var(array: int, comp: int) -> int:
    """Id of component ``comp`` of node array ``array``."""
    return array * _NODE_STRIDE + comp


def species_var(array: int, comp: int) -> int:
    """Id of component ``comp`` of species array ``array``."""
    return _SPECIES_BASE + array * _NODE_STRIDE + comp


def decode(var: int) -> tuple[bool, int, int]:
    """``(is_species, array, comp)`` of a variable id."""
    species = var >= _SPECIES_BASE
    rest = var - _SPECIES_BASE if species else var
    return species, rest // _NODE_STRIDE, rest % _NODE_STRIDE


@dataclasses.dataclass(frozen=True, eq=False)
class Sweep:
    """Node output array ``out`` is the VJP of the polynomials ``primal`` with respect to node
    array ``wrt`` for the cotangents in node array ``cot`` (one per primal polynomial). The
    code generator may evaluate it as a reverse sweep (:mod:`.reverse_sweep`) instead of as
    the derivative polynomials in ``Program.node_out[out]``, which stay its meaning."""

    out: int
    wrt: int
    cot: int
    primal: tuple[Poly, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """Polynomial outputs over node and species input arrays (widths in components)."""

    name: str
    node_in: tuple[int, ...]
    species_in: tuple[int, ...]
    node_out: tuple[tuple[Poly, ...], ...]
    species_out: tuple[tuple[Poly, ...], ...]
    sweep: Sweep | None = None

    @property
    def num_monomials(self) -> int:
        outputs = (self.node_out, self.species_out)
        return sum(len(p) for arrays in outputs for a in arrays for p in a)


def add_term(dst: Poly, mono: tuple[int, ...], coeff: float) -> None:
    """Adds ``coeff * mono`` to ``dst`` (a term that cancels is removed)."""
    value = dst.get(mono, 0.0) + coeff
    if value == 0.0:
        dst.pop(mono, None)
    else:
        dst[mono] = value


def _derivatives(poly: Poly):
    """Yields ``(var, monomial / var, coeff * multiplicity)`` for every variable of every term."""
    for mono, coeff in poly.items():
        for i, var in enumerate(mono):
            if i > 0 and mono[i - 1] == var:
                continue
            mult = mono.count(var)
            yield var, mono[:i] + mono[i + 1 :], coeff * mult


def _times(mono: tuple[int, ...], var: int) -> tuple[int, ...]:
    return tuple(sorted(mono + (var,)))


def _vjp(outputs: list[Poly], cot: list[int], wrt: dict[int, tuple[int, int]]) -> dict:
    """``sum_o cot_o * d outputs[o] / d v`` for every variable ``v`` in ``wrt``.

    ``wrt`` maps a variable to ``(result array, component)``; returns ``{(array, comp): Poly}``.
    """
    result: dict[tuple[int, int], Poly] = defaultdict(dict)
    for poly, c in zip(outputs, cot, strict=True):
        for var, rest, coeff in _derivatives(poly):
            if var in wrt:
                add_term(result[wrt[var]], _times(rest, c), coeff)
    return result


def _collect(result: dict, array: int, width: int) -> tuple[Poly, ...]:
    return tuple(dict(result.get((array, i), {})) for i in range(width))


@functools.lru_cache(maxsize=64)
def programs(paths: PathList) -> dict[str, Program]:
    """The ``fwd``, ``bwd`` and ``bwd2`` programs of ``paths`` (see the module docstring)."""
    k, m, nw = paths.num_in, paths.num_out, paths.num_weights
    x = [node_var(0, i) for i in range(k)]
    w = [species_var(0, i) for i in range(nw)]
    out: list[Poly] = [{} for _ in range(m)]
    for p in range(paths.num_paths):
        factors = [x[i] for i in paths.in_idx[p] if i >= 0] + [w[paths.w_idx[p]]]
        add_term(out[paths.out_idx[p]], tuple(sorted(factors)), float(paths.coeff[p]))
    fwd = Program("fwd", (k,), (nw,), (tuple(out),), ())

    g = [node_var(1, o) for o in range(m)]
    wrt = {v: (0, i) for i, v in enumerate(x)} | {v: (1, i) for i, v in enumerate(w)}
    grads = _vjp(out, g, wrt)
    gx, gw = _collect(grads, 0, k), _collect(grads, 1, nw)
    sweep = Sweep(0, 0, 1, tuple(out))  # gx: the VJP of out for x, cotangent g
    bwd = Program("bwd", (k, m), (nw,), (gx,), (gw,), sweep)
    # gx alone, for weights that need no gradient (force inference): no species outputs, so it
    # runs on unsorted nodes.
    bwd_x = Program("bwd_x", (k, m), (nw,), (gx,), (), sweep)

    # L = hx . gx + hW . gW; its gradient w.r.t. (x, g, W) is the VJP of bwd.
    hx = [node_var(2, i) for i in range(k)]
    hw = [species_var(1, i) for i in range(nw)]
    wrt2 = wrt | {v: (2, i) for i, v in enumerate(g)}
    seconds = _vjp(list(gx) + list(gw), hx + hw, wrt2)
    dx, dw, dg = _collect(seconds, 0, k), _collect(seconds, 1, nw), _collect(seconds, 2, m)
    bwd2 = Program("bwd2", (k, m, k), (nw, nw), (dx, dg), (dw,))
    return {"fwd": fwd, "bwd": bwd, "bwd_x": bwd_x, "bwd2": bwd2}


def _monomial_values(mono, node_in, species_rows) -> np.ndarray:
    value = None
    for var in mono:
        is_species, array, comp = decode(var)
        v = species_rows[array][:, comp, :] if is_species else node_in[array][:, :, comp]
        value = v if value is None else value * v
    return value


def evaluate(
    program: Program,
    node_in: list[np.ndarray],
    species_in: list[np.ndarray],
    species: np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """NumPy meaning of ``program``: ``(node outputs [N, C, m], species outputs [S, m, C])``.

    Nodes whose species is outside ``[0, S)`` see zero species values and add nothing to the
    species outputs (the reference's one-hot weight lookup).
    """
    n, c = node_in[0].shape[:2]
    s = species_in[0].shape[0]
    valid = (species >= 0) & (species < s)
    idx = np.where(valid, species, 0)
    rows = [np.where(valid[:, None, None], a[idx], 0.0) for a in species_in]  # [N, k, C]
    dtype = node_in[0].dtype

    def poly_value(poly: Poly) -> np.ndarray:
        total = np.zeros((n, c), dtype)
        for mono, coeff in poly.items():
            total += coeff * _monomial_values(mono, node_in, rows)
        return total

    node_out = [np.stack([poly_value(p) for p in arr], axis=-1) for arr in program.node_out]
    species_out = []
    for arr in program.species_out:
        per_node = np.stack([poly_value(p) for p in arr], axis=1)  # [N, m, C]
        acc = np.zeros((s,) + per_node.shape[1:], dtype)
        np.add.at(acc, idx[valid], per_node[valid])
        species_out.append(acc)
    return node_out, species_out
