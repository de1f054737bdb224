"""Host-side programs for the CUDA symmetric-contraction engine, and their exact semantics.

The CUDA side has one generic kernel, the *engine*, that evaluates a sparse polynomial program per
``(node, channel)``; every derivative of the contraction is another program for it, derived here
with NumPy at trace time. This module is the single source of truth for what a program means:
:func:`emulate` evaluates a packed program with NumPy exactly as the kernel does (CPU tests check
every program against autodiff of the pure-JAX reference through it).

**Base terms.** The paths of a :class:`~.paths.PathList` with the same output component ``o`` and
the same monomial collapse into one *base term* ``j = (o, a, b, k)``, ``a <= b <= k``, where
index ``16`` (:data:`ONE`) stands for the constant 1 (so ``x_a`` is ``(a, 16, 16)``). Per species
and channel the weights enter only through ``TW[s, c, j] = sum_{p -> j} coeff[p] W[s, w_p, c]``
(:func:`tbase_np`; its transpose is :func:`wgrad_np`), and

    out[n, c, o] = sum_{j : o_j = o} TW[s_n, c, j] * x~[a_j] x~[b_j] x~[k_j],   x~ = [x, 0.., 1].

**Engine program.** Per ``(n, c)`` the engine loads ``nops`` operand vectors ``U[op]`` of 17
registers (``U[op][:K_op]`` from operand ``op``'s array ``[N, C, K_op]``, zeros, ``U[op][16] = 1``),
builds a per-lane table of products ``V[e] = U[alpha_e][i_e] * U[beta_e][j_e]`` and walks groups
``(o, kk)``, ``kk = op * 17 + i`` indexing the concatenated registers ``Uf``:

    out[o] = sum_kk Uf[kk] * sum_{slots t in group (o, kk)} mult_t * Tsrc_t[s, c, j_t] * V[q_t]

*Carrier* slots (the first records of a group) also emit ``z = V[q] * Uf[kk] * Y[o]`` with
``Y[o] = V[yslot[o]]``, summed over the nodes of a species into ``Z[s, c, cj_t] += cm_t * z``:
the reduction that turns into the weight gradient. Slots come in records of three; padding slots
read the table's zero row ``V[nv]`` with ``T = 0``. Only non-empty groups are listed; a group's
``tail`` is the number of used slots in its last (non-carrier) record when that is partial (the
kernel skips the unused gathers there), and ``Uf[kk]`` is read from the table (``V[uslot]``).

**Programs** (``g``: cotangent of ``out``; ``hx, hZ``: cotangents of ``gx, Z``):

- ``fwd``: operands ``[x]``; ``out``.
- ``bwd``: operands ``[x, g]``; ``gx = sum_j TW_j g[o_j] grad mono_j`` and carriers
  ``Z_j = sum_n g[o_j] mono_j`` (the cotangent of ``TW``).
- ``dg``: operands ``[x, hx]``; ``dg[o] = sum_j TW_j (hx . grad mono_j) + hZ_j mono_j``.
- ``dx``: operands ``[x, g, hx]``; ``dx = sum_j g[o_j] (TW_j grad(hx . grad mono_j) + hZ_j
  grad mono_j)`` and carriers ``Z2_j = sum_n g[o_j] (hx . grad mono_j)`` (cotangent of ``TW``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict

import numpy as np

from jax_mace.symmetric_contraction.paths import PathList

ONE = 16  # register index of the constant 1 in every operand vector
NREG = 17  # registers per operand vector (at most 16 components + the constant)
MAX_SLOTS = 1023  # table slots incl. the zero row (10-bit minimum field width)
MAX_RECORDS = 1 << 14  # record indices are 14-bit (the top 2 bits of goff hold the tail)
Q_SHIFT = (0, 10, 20)  # bit offsets of the three 10-bit slot fields of a record's q word
KIND_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # operand pairs of table kinds
ITEM_NODES = 128  # nodes per work item of the engine (one species each)


@dataclasses.dataclass(frozen=True, eq=False)
class BaseTerms:
    """Paths collapsed by ``(output, monomial)``; CSR maps for ``TW`` and its transpose.

    ``key [D, 4]``: ``(o, a, b, k)`` of each base term (``a <= b <= k``, 16 = constant 1), sorted
    by ``(o, k, a, b)``. ``tb_*``: term -> its paths ``(w, coeff)``; ``wg_*``: weight -> its paths
    ``(term, coeff)``.
    """

    key: np.ndarray
    tb_start: np.ndarray
    tb_w: np.ndarray
    tb_coeff: np.ndarray
    wg_start: np.ndarray
    wg_term: np.ndarray
    wg_coeff: np.ndarray
    num_in: int
    num_out: int
    num_weights: int

    @property
    def num_terms(self) -> int:
        return int(self.key.shape[0])


@functools.lru_cache(maxsize=64)
def base_terms(paths: PathList) -> BaseTerms:
    """Collapse the paths of ``paths`` into base terms (see the module docstring)."""
    if paths.num_in > ONE or paths.num_out > ONE:
        raise ValueError(
            f"the CUDA engine supports at most {ONE} input and output components per channel "
            f"(got K={paths.num_in}, M={paths.num_out})"
        )
    ks = np.where(paths.in_idx < 0, ONE, paths.in_idx)  # sorted, padding 16 sorts last
    keys = np.concatenate([paths.out_idx[:, None], ks], axis=1).astype(np.int64)
    order_key = keys[:, [0, 3, 1, 2]]  # (o, k, a, b)
    uniq, term_of_path = np.unique(order_key, axis=0, return_inverse=True)
    term_of_path = term_of_path.reshape(-1)
    key = uniq[:, [0, 2, 3, 1]].astype(np.int32)  # back to (o, a, b, k)
    d = key.shape[0]
    by_term = np.argsort(term_of_path, kind="stable")
    tb_start = np.searchsorted(term_of_path[by_term], np.arange(d + 1)).astype(np.int32)
    by_w = np.lexsort((term_of_path, paths.w_idx))
    wg_start = np.searchsorted(paths.w_idx[by_w], np.arange(paths.num_weights + 1))
    return BaseTerms(
        key=key,
        tb_start=tb_start,
        tb_w=paths.w_idx[by_term].astype(np.int32),
        tb_coeff=paths.coeff[by_term].astype(np.float64),
        wg_start=wg_start.astype(np.int32),
        wg_term=term_of_path[by_w].astype(np.int32),
        wg_coeff=paths.coeff[by_w].astype(np.float64),
        num_in=paths.num_in,
        num_out=paths.num_out,
        num_weights=paths.num_weights,
    )


# ----------------------------------------------------------------------------------------------
# Program construction


@dataclasses.dataclass(frozen=True)
class _Term:
    o: int  # output row
    kk: int  # register index into the concatenated operands (op * 17 + i)
    q: tuple[int, int, int, int]  # table entry (alpha, i, beta, j)
    src: int  # 0: T0 (TW), 1: T1 (hZ)
    j: int  # base term whose T entry multiplies (-1: none, the slot adds 0)
    mult: float
    carry_j: int = -1  # Z index this slot's product is summed into (-1: not a carrier)
    carry_m: float = 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class EngineProgram:
    """A packed engine program (see the module docstring for the semantics).

    ``i32`` holds, at the offsets in ``offsets``: ``smap [6*289]`` (table slot of entry
    ``(kind, i, j)`` or 0xFFFF), ``glist [NG, 4]`` (per non-empty group, sorted by output row:
    ``r0 | tail << 14 | uslot << 16``, carrier end, record end, output row ``o``; ``V[uslot] =
    Uf[kk]``), ``yslot [mout]``, ``qpack [R]`` (three slots at bits :data:`Q_SHIFT`; padding =
    the zero row ``nv``), ``tj [3R]`` (``j | src << 30``, -1 = none) and ``cj [3R]``. ``f64``
    holds ``mult [3R]`` and ``cm [3R]``.
    """

    name: str
    nops: int
    mout: int  # output rows computed (<= 17)
    mreal: int  # output rows written (<= mout)
    nv: int  # table slots
    kinds: int  # bit mask of the table kinds used
    num_records: int
    num_groups: int
    has_carry: bool
    num_terms: int  # base terms D (row length of T0, T1 and Z)
    i32: np.ndarray
    f64: np.ndarray
    offsets: dict

    def attrs(self) -> dict:
        """The integer attributes the FFI engine call needs."""
        o = self.offsets
        return dict(
            nops=self.nops,
            mout=self.mout,
            mreal=self.mreal,
            nv=self.nv,
            kinds=self.kinds,
            nrec=self.num_records,
            ngroups=self.num_groups,
            carry=int(self.has_carry),
            nterms=self.num_terms,
            off_glist=o["glist"],
            off_yslot=o["yslot"],
            off_qpack=o["qpack"],
            off_tj=o["tj"],
            off_cj=o["cj"],
            smap=self.i32[o["smap"] : o["smap"] + len(KIND_PAIRS) * NREG * NREG].copy(),
        )


def _canon(alpha: int, i: int, beta: int, j: int) -> tuple[int, int, int, int]:
    if (alpha, i) > (beta, j):
        alpha, i, beta, j = beta, j, alpha, i
    return alpha, i, beta, j


def _uslot_entry(kk: int) -> tuple[int, int, int, int]:
    """Table entry holding ``Uf[kk]`` itself (a product with the constant 1)."""
    op, i = divmod(kk, NREG)
    return _canon(op, i, op, ONE)


def _pack(name: str, terms: list[_Term], nops: int, mout: int, mreal: int, yop: int, d: int):
    kk_n = NREG * nops
    for t in terms:
        if not (0 <= t.o < mout and 0 <= t.kk < kk_n):
            raise AssertionError(f"term out of range in {name}: {t}")
    entries = {t.q for t in terms} | {_uslot_entry(t.kk) for t in terms}
    if yop >= 0:
        entries |= {_canon(yop, o, yop, ONE) for o in range(mout)}
    entries = sorted(entries, key=lambda e: (KIND_PAIRS.index((e[0], e[2])), e[1], e[3]))
    if len(entries) + 1 > MAX_SLOTS:
        raise ValueError(f"program {name} needs {len(entries)} table slots (max {MAX_SLOTS - 1})")
    zero = len(entries)
    slot = {e: n for n, e in enumerate(entries)}
    smap = np.full((len(KIND_PAIRS), NREG, NREG), 0xFFFF, np.int64)
    kinds = 0
    for (a, i, b, j), s in slot.items():
        kind = KIND_PAIRS.index((a, b))
        smap[kind, i, j] = s
        kinds |= 1 << kind
    yslot = np.zeros(mout, np.int64)
    if yop >= 0:
        yslot[:] = [slot[_canon(yop, o, yop, ONE)] for o in range(mout)]

    groups: dict[tuple[int, int], tuple[list[_Term], list[_Term]]] = defaultdict(lambda: ([], []))
    for t in terms:
        groups[(t.o, t.kk)][0 if t.carry_j >= 0 else 1].append(t)
    recs: list[list[_Term | None]] = []
    glist = []
    for o, kk in sorted(groups):
        carriers, normal = groups[(o, kk)]
        r0 = len(recs)
        for part in (carriers, normal):
            for r in range(0, len(part), 3):
                chunk = part[r : r + 3]
                recs.append(chunk + [None] * (3 - len(chunk)))
            if part is carriers:
                rc = len(recs)
        tail = len(normal) % 3
        glist.append((r0 | (tail << 14) | (slot[_uslot_entry(kk)] << 16), rc, len(recs), o))
    nrec = len(recs)
    if nrec >= MAX_RECORDS:
        raise ValueError(f"program {name} has {nrec} records (max {MAX_RECORDS - 1})")
    qpack = np.zeros(nrec, np.int64)
    tj = np.full(3 * nrec, -1, np.int64)
    cj = np.full(3 * nrec, -1, np.int64)
    mult = np.zeros(3 * nrec)
    cm = np.zeros(3 * nrec)
    for r, rec in enumerate(recs):
        for s, t in enumerate(rec):
            q = zero if t is None else slot[t.q]
            qpack[r] |= q << Q_SHIFT[s]
            if t is None:
                continue
            if t.j >= 0:
                tj[3 * r + s] = t.j | (t.src << 30)
                mult[3 * r + s] = t.mult
            cj[3 * r + s] = t.carry_j
            cm[3 * r + s] = t.carry_m
    parts = [
        ("smap", smap.reshape(-1)),
        ("glist", np.asarray(glist, np.int64).reshape(-1)),
        ("yslot", yslot),
        ("qpack", qpack),
        ("tj", tj),
        ("cj", cj),
    ]
    offsets, chunks, pos = {}, [], 0
    for key, arr in parts:
        offsets[key] = pos
        chunks.append(arr)
        pos += arr.size
    i32 = np.concatenate(chunks).astype(np.uint32).view(np.int32)
    return EngineProgram(
        name=name,
        nops=nops,
        mout=mout,
        mreal=mreal,
        nv=len(entries),
        kinds=kinds,
        num_records=nrec,
        num_groups=len(glist),
        has_carry=any(t.carry_j >= 0 for t in terms),
        num_terms=d,
        i32=i32,
        f64=np.concatenate([mult, cm]),
        offsets=offsets,
    )


def _mono(key_row) -> list[int]:
    return [int(v) for v in key_row[1:4]]


def _partials(mono: list[int]) -> list[tuple[int, int, list[int]]]:
    """``[(v, m_v, rest)]``: d mono / d x_v = m_v * prod(rest), over distinct real v."""
    out = []
    for v in sorted({u for u in mono if u != ONE}):
        rest = list(mono)
        rest.remove(v)
        out.append((v, mono.count(v), rest))
    return out


@functools.lru_cache(maxsize=64)
def program(paths: PathList, kind: str) -> EngineProgram:
    """The engine program ``kind`` in ``{"fwd", "bwd", "dg", "dx"}`` for ``paths``."""
    base = base_terms(paths)
    k_in, m_out, d = base.num_in, base.num_out, base.num_terms
    terms: list[_Term] = []
    if kind == "fwd":
        for j, row in enumerate(base.key):
            o, (a, b, k) = int(row[0]), _mono(row)
            terms.append(_Term(o, k, _canon(0, a, 0, b), 0, j, 1.0))
        return _pack(kind, terms, 1, m_out, m_out, -1, d)
    if kind == "bwd":  # operands x, g; output gx[v]; carriers Z_j = g[o_j] mono_j (Y = x)
        for j, row in enumerate(base.key):
            o, mono = int(row[0]), _mono(row)
            for n, (v, m_v, rest) in enumerate(_partials(mono)):
                carrier = dict(carry_j=j, carry_m=1.0) if n == 0 else {}
                terms.append(
                    _Term(v, NREG + o, _canon(0, rest[0], 0, rest[1]), 0, j, m_v, **carrier)
                )
        return _pack(kind, terms, 2, k_in, k_in, 0, d)
    if kind == "dg":  # operands x, hx; output dg[o]
        for j, row in enumerate(base.key):
            o, mono = int(row[0]), _mono(row)
            a, b, k = mono
            terms.append(_Term(o, k, _canon(0, a, 0, b), 1, j, 1.0))  # hZ_j mono_j
            for v, m_v, rest in _partials(mono):  # TW_j hx[v] d mono / d x_v
                terms.append(_Term(o, NREG + v, _canon(0, rest[0], 0, rest[1]), 0, j, m_v))
        return _pack(kind, terms, 2, m_out, m_out, -1, d)
    if kind == "dx":  # operands x, g, hx; output dx[v'] (+ row 16 for carrier-only slots)
        need_dummy = False
        for j, row in enumerate(base.key):
            o, mono = int(row[0]), _mono(row)
            for v, m_v, rest in _partials(mono):  # hZ_j g[o] d mono / d x_v
                terms.append(_Term(v, NREG + o, _canon(0, rest[0], 0, rest[1]), 1, j, m_v))
            # TW_j g[o] hx[v] d2 mono / dx_v dx_v', over ordered pairs of distinct slots.
            second: dict[tuple[int, int, int], int] = defaultdict(int)
            for s1 in range(3):
                for s2 in range(3):
                    if s1 == s2 or ONE in (mono[s1], mono[s2]):
                        continue
                    r = mono[3 - s1 - s2]
                    second[(mono[s2], mono[s1], r)] += 1  # (v', v, rest)
            carried = set()
            for (v2, v, r), cnt in sorted(second.items()):
                carrier = {}
                if v not in carried:  # carries g hx[v] m_v mono / x_v = z * m_v
                    carried.add(v)
                    carrier = dict(carry_j=j, carry_m=float(mono.count(v)))
                terms.append(_Term(v2, r, _canon(1, o, 2, v), 0, j, float(cnt), **carrier))
            for v, m_v, _rest in _partials(mono):
                if v not in carried:  # degree-1 monomial: a carrier-only slot on row 16
                    need_dummy = True
                    terms.append(
                        _Term(ONE, ONE, _canon(1, o, 2, v), 0, -1, 0.0, carry_j=j, carry_m=m_v)
                    )
        return _pack(kind, terms, 3, NREG if need_dummy else k_in, k_in, 0, d)
    raise ValueError(f"unknown program kind {kind!r}")


# ----------------------------------------------------------------------------------------------
# Exact NumPy semantics of the kernels (the CPU tests' oracle for the CUDA code)


def tbase_np(weights: np.ndarray, base: BaseTerms) -> np.ndarray:
    """``TW [S, C, D]`` from ``weights [S, W, C]``."""
    s, _, c = weights.shape
    out = np.zeros((s, c, base.num_terms), weights.dtype)
    for j in range(base.num_terms):
        for p in range(base.tb_start[j], base.tb_start[j + 1]):
            out[:, :, j] += base.tb_coeff[p] * weights[:, base.tb_w[p], :]
    return out


def wgrad_np(z: np.ndarray, base: BaseTerms) -> np.ndarray:
    """Transpose of :func:`tbase_np`: ``[S, C, D] -> [S, W, C]``."""
    s, c, _ = z.shape
    out = np.zeros((s, base.num_weights, c), z.dtype)
    for w in range(base.num_weights):
        for p in range(base.wg_start[w], base.wg_start[w + 1]):
            out[:, w, :] += base.wg_coeff[p] * z[:, :, base.wg_term[p]]
    return out


def emulate(
    prog: EngineProgram,
    operands: list[np.ndarray],
    t0: np.ndarray,
    t1: np.ndarray,
    species: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Evaluate a packed program exactly as the CUDA engine does.

    Args:
        operands: ``nops`` arrays ``[N, C, K_op]`` (``K_op <= 16``).
        t0, t1: ``[S, C, D]`` coefficient tables (``TW`` and ``hZ``).
        species: ``[N]`` ints already in ``[0, S)``.

    Returns:
        ``out [N, C, mreal]`` and, for programs with carriers, ``Z [S, C, D]``.
    """
    n, c = operands[0].shape[:2]
    i32 = prog.i32.view(np.uint32).astype(np.int64)
    off = prog.offsets
    r = prog.num_records
    u = np.zeros((prog.nops, n, c, NREG))
    for op, arr in enumerate(operands[: prog.nops]):
        u[op, :, :, : arr.shape[2]] = arr
    u[:, :, :, ONE] = 1.0
    smap = i32[off["smap"] : off["smap"] + len(KIND_PAIRS) * NREG * NREG].reshape(6, NREG, NREG)
    v = np.zeros((prog.nv + 1, n, c))  # row nv stays zero
    for kind, (a, b) in enumerate(KIND_PAIRS):
        for i in range(NREG):
            for j in range(NREG):
                if smap[kind, i, j] != 0xFFFF:
                    v[smap[kind, i, j]] = u[a, :, :, i] * u[b, :, :, j]
    glist = i32[off["glist"] : off["glist"] + 4 * prog.num_groups].reshape(-1, 4)
    yslot = i32[off["yslot"] : off["yslot"] + prog.mout]
    qpack = i32[off["qpack"] : off["qpack"] + r]
    tj = prog.i32[off["tj"] : off["tj"] + 3 * r].astype(np.int64)
    cj = prog.i32[off["cj"] : off["cj"] + 3 * r].astype(np.int64)
    mult, cm = prog.f64[: 3 * r], prog.f64[3 * r :]
    tsrc = (t0, t1)
    out = np.zeros((n, c, prog.mout))
    z = np.zeros((t0.shape[0], c, prog.num_terms)) if prog.has_carry else None
    for g0, rc, r1, o in glist:
        r0, tail, uslot = g0 & ((1 << 14) - 1), (g0 >> 14) & 3, g0 >> 16
        s = np.zeros((n, c))
        for rec in range(r0, r1):
            for slot in range(3):
                if rec == r1 - 1 and rec >= rc and tail and slot >= tail:
                    continue  # the kernel skips these gathers (they would read V[nv] = 0)
                q = (qpack[rec] >> Q_SHIFT[slot]) & 1023
                t = tj[3 * rec + slot]
                tval = 0.0
                if t >= 0:
                    tval = mult[3 * rec + slot] * tsrc[t >> 30][species, :, t & ((1 << 30) - 1)]
                s += tval * v[q]
                if rec < rc and cj[3 * rec + slot] >= 0:
                    zz = v[q] * v[uslot] * v[yslot[o]]
                    np.add.at(z[:, :, cj[3 * rec + slot]], species, cm[3 * rec + slot] * zz)
        out[:, :, o] += v[uslot] * s
    return out[:, :, : prog.mreal], z
