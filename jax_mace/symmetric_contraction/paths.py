"""Path lists: the symmetric contraction as a sparse polynomial (host-side NumPy).

MACE's product basis maps the ``K`` components of one channel of the atomic basis ``A`` (e.g.
``0e+1o+2e+3o``, ``K = 16``) to the ``M`` components of the output irreps (e.g. ``0e+1o``,
``M = 4``) with a polynomial of degree ``<= correlation``:

    out[m] = sum_p  coeff[p] * w[w_idx[p]] * x[in_idx[p, 0]] * ... * x[in_idx[p, nu[p] - 1]]
             over the paths p with out_idx[p] == m.

The coefficients come from the generalized Clebsch-Gordan coupling tensors ``U_nu``: an
orthonormal basis of the ``ir_out`` copies inside the symmetric power ``Sym^nu(irreps_in)``
(computed with ``e3nn_jax.reduced_symmetric_tensor_product_basis``). A tensor ``U_nu`` has shape
``[K]*nu + [mult, 2l+1]``; since ``x[k1] x[k2] x[k3]`` is symmetric in its indices, all orderings
of one index multiset are folded onto the sorted tuple ``k1 <= k2 <= k3`` and their coefficients
summed, leaving the non-redundant paths.

Layout of a :class:`PathList` (``P`` paths):

- ``in_idx: int32 [P, 3]``: sorted component indices ``k1 <= k2 <= k3`` into the ``K`` inputs of a
  channel; slots ``t >= nu[p]`` are ``-1``.
- ``nu: int32 [P]``: correlation order (number of factors) of each path, ``1..3``.
- ``out_idx: int32 [P]``: output component ``0..M-1`` (components of ``irreps_out`` in order).
- ``w_idx: int32 [P]``: weight index ``0..W-1``. Weights are ordered by output irrep (in the order
  of ``irreps_out``), then by ``nu`` ascending, then by the copy ``eta`` of that irrep in
  ``Sym^nu``; ``w_out[W]`` and ``w_nu[W]`` record the irrep and order of each weight.
- ``coeff: float64 [P]``: folded coupling coefficient.
- ``num_in`` (``K``), ``num_out`` (``M``), ``num_weights`` (``W``).

Paths are sorted by ``(nu, out_idx, w_idx, in_idx)``. Instances hash and compare by a digest of
their arrays, so they can be static arguments of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools

import e3nn_jax as e3nn
import numpy as np

MAX_CORRELATION = 3
_ZERO_TOL = 1e-10


@dataclasses.dataclass(frozen=True, eq=False)
class PathList:
    """Non-redundant paths of a symmetric contraction (see the module docstring for the layout)."""

    in_idx: np.ndarray
    nu: np.ndarray
    out_idx: np.ndarray
    w_idx: np.ndarray
    coeff: np.ndarray
    num_in: int
    num_out: int
    num_weights: int
    w_out: np.ndarray
    w_nu: np.ndarray
    irreps_in: str = ""
    irreps_out: str = ""
    correlation: int = 0
    digest: str = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        h = hashlib.sha256()
        for name in ("in_idx", "nu", "out_idx", "w_idx", "coeff", "w_out", "w_nu"):
            a = np.ascontiguousarray(getattr(self, name))
            a.setflags(write=False)
            object.__setattr__(self, name, a)
            h.update(name.encode())
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(a.tobytes())
        h.update(f"{self.num_in},{self.num_out},{self.num_weights}".encode())
        object.__setattr__(self, "digest", h.hexdigest())
        self.validate()

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other) -> bool:
        return isinstance(other, PathList) and self.digest == other.digest

    @property
    def num_paths(self) -> int:
        return int(self.nu.shape[0])

    def count_by_nu(self) -> dict[int, int]:
        """Number of paths of each correlation order, e.g. ``{1: 1, 2: 16, 3: 77}``."""
        return {int(n): int(np.sum(self.nu == n)) for n in range(1, MAX_CORRELATION + 1)}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the rule if the arrays are inconsistent."""
        p = self.nu.shape[0]
        checks = [
            (self.in_idx.shape == (p, MAX_CORRELATION), "in_idx must have shape [P, 3]"),
            (self.out_idx.shape == (p,), "out_idx must have shape [P]"),
            (self.w_idx.shape == (p,), "w_idx must have shape [P]"),
            (self.coeff.shape == (p,), "coeff must have shape [P]"),
            (np.all((self.nu >= 1) & (self.nu <= MAX_CORRELATION)), "nu must be in 1..3"),
            (np.all((self.out_idx >= 0) & (self.out_idx < self.num_out)), "out_idx out of range"),
            (np.all((self.w_idx >= 0) & (self.w_idx < self.num_weights)), "w_idx out of range"),
            (self.w_out.shape == (self.num_weights,), "w_out must have shape [W]"),
            (self.w_nu.shape == (self.num_weights,), "w_nu must have shape [W]"),
        ]
        slot = np.arange(MAX_CORRELATION)[None, :]
        used = slot < self.nu[:, None]
        checks += [
            (np.all(self.in_idx[~used] == -1), "unused in_idx slots must be -1"),
            (
                np.all((self.in_idx[used] >= 0) & (self.in_idx[used] < self.num_in)),
                "in_idx out of range",
            ),
            (np.all(np.diff(self.in_idx, axis=1)[used[:, 1:]] >= 0), "in_idx must be sorted"),
        ]
        for ok, rule in checks:
            if not ok:
                raise ValueError(f"invalid PathList: {rule}")


def _fold(u: np.ndarray, nu: int) -> dict[tuple[int, ...], np.ndarray]:
    """Fold ``u [K]*nu + [rest]`` onto sorted index tuples, summing coefficients."""
    folded: dict[tuple[int, ...], np.ndarray] = {}
    support = np.nonzero(np.any(np.abs(u) > _ZERO_TOL, axis=tuple(range(nu, u.ndim))))
    for ks in zip(*support, strict=True):
        key = tuple(sorted(int(k) for k in ks))
        if key not in folded:
            folded[key] = np.zeros(u.shape[nu:])
        folded[key] = folded[key] + u[ks]
    return folded


@functools.lru_cache(maxsize=64)
def _coupling(irreps_in: str, nu: int, ir_out: str) -> np.ndarray:
    """``U_nu`` for one output irrep: ``[K]*nu + [mult, 2l+1]`` (mult may be 0)."""
    d = e3nn.Irrep(ir_out).dim
    try:
        u = e3nn.reduced_symmetric_tensor_product_basis(
            e3nn.Irreps(irreps_in), nu, keep_ir=[ir_out]
        )
    except ValueError as err:  # e3nn-jax raises on an empty result instead of returning it
        if "empty" not in str(err):
            raise
        return np.zeros((e3nn.Irreps(irreps_in).dim,) * nu + (0, d))
    arr = np.asarray(u.array, dtype=np.float64)
    return arr.reshape(arr.shape[:nu] + (arr.shape[-1] // d, d))


def build_path_list(irreps_in, irreps_out, correlation: int) -> PathList:
    """Path list of the symmetric contraction ``irreps_in -> irreps_out`` up to ``correlation``.

    Args:
        irreps_in: irreps of ONE channel of the input, e.g. ``"0e+1o+2e+3o"`` (``K`` = its dim).
        irreps_out: output irreps of one channel, e.g. ``"0e+1o"`` (``M`` = its dim). An irrep
            with multiplicity ``n`` gets ``n`` independent sets of weights.
        correlation: maximal correlation order, 1..3.
    """
    if not isinstance(correlation, int | np.integer) or not 1 <= correlation <= MAX_CORRELATION:
        raise ValueError(f"correlation must be an int in 1..{MAX_CORRELATION}, got {correlation!r}")
    ir_in = e3nn.Irreps(irreps_in).simplify()
    ir_out = e3nn.Irreps(irreps_out)
    if ir_in.dim == 0 or ir_out.dim == 0:
        raise ValueError(f"irreps_in and irreps_out must be non-empty ({ir_in!r}, {ir_out!r})")

    rows: list[tuple[int, int, int, tuple[int, ...], float]] = []  # nu, out, w, ks, coeff
    w_out: list[int] = []
    w_nu: list[int] = []
    m_offset = 0
    for out_pos, ir in enumerate(irrep for mul, irrep in ir_out for _ in range(mul)):
        for nu in range(1, correlation + 1):
            u = _coupling(str(ir_in), nu, str(ir))
            mult = u.shape[-2]
            w_base = len(w_out)
            w_out += [out_pos] * mult
            w_nu += [nu] * mult
            for ks, c in _fold(u, nu).items():
                for eta, m in zip(*np.nonzero(np.abs(c) > _ZERO_TOL), strict=True):
                    rows.append((nu, m_offset + int(m), w_base + int(eta), ks, float(c[eta, m])))
        if out_pos not in w_out:
            raise ValueError(
                f"no path couples {ir_in} to output irrep {ir} with correlation <= "
                f"{correlation}: it is unreachable (check its parity and l)"
            )
        m_offset += ir.dim
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3]))
    in_idx = np.full((len(rows), MAX_CORRELATION), -1, dtype=np.int32)
    for p, row in enumerate(rows):
        in_idx[p, : len(row[3])] = row[3]
    return PathList(
        in_idx=in_idx,
        nu=np.array([r[0] for r in rows], dtype=np.int32),
        out_idx=np.array([r[1] for r in rows], dtype=np.int32),
        w_idx=np.array([r[2] for r in rows], dtype=np.int32),
        coeff=np.array([r[4] for r in rows], dtype=np.float64),
        num_in=ir_in.dim,
        num_out=ir_out.dim,
        num_weights=len(w_out),
        w_out=np.array(w_out, dtype=np.int32),
        w_nu=np.array(w_nu, dtype=np.int32),
        irreps_in=str(ir_in),
        irreps_out=str(ir_out),
        correlation=int(correlation),
    )


def dense_coupling(paths: PathList, nu: int) -> np.ndarray:
    """Unfold the paths of order ``nu`` into a dense symmetric tensor ``[K]*nu + [W, M]``.

    ``sum_k T[k1..k_nu, w, m] x[k1] ... x[k_nu]`` equals the path-list polynomial; each folded
    coefficient is spread evenly over the distinct orderings of its index tuple. Meant for tests
    and small cases (``K**3 * W * M`` floats).
    """
    k, w, m = paths.num_in, paths.num_weights, paths.num_out
    out = np.zeros((k,) * nu + (w, m))
    sel = np.nonzero(paths.nu == nu)[0]
    for p in sel:
        ks = tuple(int(i) for i in paths.in_idx[p, :nu])
        perms = set(itertools.permutations(ks))
        for perm in perms:
            out[perm + (paths.w_idx[p], paths.out_idx[p])] += paths.coeff[p] / len(perms)
    return out
