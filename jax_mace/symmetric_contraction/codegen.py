"""CUDA source of one specialised symmetric-contraction kernel per polynomial program.

Each output polynomial is factored into a trie (a multivariate Horner scheme): a trie node's
value is ``const + sum_children var * value(child)``, one fused multiply-add per edge, with the
coefficients as immediates and every operand in a register. Per output the variable order with
the fewest edges wins, weights-first or cotangents-first (see ``_order_keys``).

Kernel layout (the C++ side, ``cpp/mace/symjit.cc``, fills :data:`ARGS_STRUCT` and picks the
launch shape): one thread per ``(node, channel)``; a block is ``BLOCK_THREADS`` consecutive
channels x ``blockDim.y`` *groups* and owns a chunk of one work item (<= 128 nodes of one
species, from the species sort). Each group walks its share of the chunk, ``NODES_PER_CALL``
nodes at a time: it copies the node rows (vector loads; lanes are channels, so a row of 16
values is 64 contiguous bytes per lane) into its own shared-memory columns, then calls one
non-inlined function per output; a function reads the node values it needs from those columns
and the species values (weights) of its channel from global memory (L1), where they are used.
Programs up to ``INLINE_CODE_BYTES`` inline those functions instead. A backward's ``gx`` may be
evaluated as a reverse sweep over the forward's monomial trie (:mod:`.reverse_sweep`, one
function per first variable, accumulating in shared memory) where that needs fewer operations.

The code is long and straight-line (at two nodes per call, 85 KB for MACE-MP-L's forward and
about 280 KB for its backward), so instruction fetch, not arithmetic, limits it when the warps of
a multiprocessor run different parts of it (Nsight Compute, H100, MP-L forward with one 4-warp
block per chunk: ~40% of stall cycles waiting for an instruction). Blocks of several groups with
a barrier per loop step (``JAX_MACE_SYMJIT_SYNC=1``, the default for all but small kernels,
see :func:`sync_level`; 2 adds one after every output call, 0 none) leave few distinct
instruction streams per multiprocessor.

Node outputs are stored per node (vector stores); species outputs are summed per group (in
registers when inlined, else in shared memory), summed over the groups at the end and added to
the ``[S, m, C]`` outputs atomically (zeroed by the launcher). Tuning overrides, read at import:
``JAX_MACE_SYMJIT_NODES``, ``_SYNC``, ``_GROUPED_KB``, ``_INLINE_KB``, ``_SWEEP_INLINE_KB``,
``_MIN_BLOCKS``, ``_LARGE_KB``, ``_SWEEP``, ``_UNSORTED``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import numpy as np

from jax_mace.symmetric_contraction import reverse_sweep
from jax_mace.symmetric_contraction.polynomial import Poly, Program, decode

KERNEL_NAME = "jaxk_symjit"
BLOCK_THREADS = 128
# Nodes evaluated together per output call (weights loaded once for all, independent chains).
# One node per call against two, H100: MACE-MP-L 3-8% faster, MACE-MP-M's forward+backward 11%
# faster at 10k nodes and 2% slower at 50k (fewer registers, half the code; docs/symcon_cuda.md).
NODES_PER_CALL = int(os.environ.get("JAX_MACE_SYMJIT_NODES", "1"))
# Barriers that keep a block's warps on the same code: 0 none, 1 per loop step, 2 per output;
# forced by JAX_MACE_SYMJIT_SYNC, else :func:`sync_level` decides per program.
SYNC_LEVEL = (
    int(os.environ["JAX_MACE_SYMJIT_SYNC"]) if "JAX_MACE_SYMJIT_SYNC" in os.environ else None
)
# Rows of 16 node outputs written by whole warps (staged in shared memory) in small kernels
# (MACE-MP-S's backwards): forward+backward 1-2% faster at 50k nodes, equal at 10k (H100).
COALESCED_STORES = os.environ.get("JAX_MACE_SYMJIT_COALESCED", "1") != "0"
# Node values of small kernels held in registers, not staged in shared memory
# (JAX_MACE_SYMJIT_REGISTER_NODES=0: staged; see register_nodes).
REGISTER_NODES = os.environ.get("JAX_MACE_SYMJIT_REGISTER_NODES", "1") != "0"
MAX_NODE_ARRAYS = 3
MAX_SPECIES_ARRAYS = 2
MAX_NODE_OUTPUTS = 2
MAX_SPECIES_OUTPUTS = 2

# Must match SymjitArgs in cpp/mace/symjit.h field for field.
ARGS_STRUCT = """template <class T, int R> struct Vals { T v[R]; };
struct SymjitArgs {
  const void* nin[3];
  const void* sin[2];
  void* nout[2];
  void* sout[2];
  const int* perm;
  const int* items;
  const int* nitems;
  int n;
  int c;
  int s;
  int chunk;
};"""


@dataclasses.dataclass
class _Trie:
    const: float = 0.0
    children: dict = dataclasses.field(default_factory=dict)

    def insert(self, mono: tuple[int, ...], coeff: float) -> None:
        node = self
        for var in mono:
            node = node.children.setdefault(var, _Trie())
        node.const += coeff

    def edges(self) -> int:
        return sum(1 + child.edges() for child in self.children.values())

    def value(self, env) -> np.ndarray:
        total = self.const
        for var, child in self.children.items():
            total = total + env(var) * child.value(env)
        return total


def _order_keys():
    """Variable orders tried per output. An x-first order (weights innermost) was measured too:
    never the fewest edges by much, and it keeps every weight live across the output."""

    def species_first(var):
        species, array, comp = decode(var)
        return (0 if species else 1 if array > 0 else 2, var)

    def cotangent_first(var):
        species, array, comp = decode(var)
        return (0 if (not species and array > 0) else 1 if species else 2, var)

    return (species_first, cotangent_first)


def build_trie(poly: Poly) -> _Trie:
    """The trie of ``poly`` with the fewest edges over a few variable orders."""
    best = None
    for key in _order_keys():
        trie = _Trie()
        for mono, coeff in poly.items():
            trie.insert(tuple(sorted(mono, key=key)), coeff)
        if best is None or trie.edges() < best.edges():
            best = trie
    return best


class _Emitter:
    """Emits the Horner code of a trie for ``NODES_PER_CALL`` nodes at once: the node sets get
    their own temporaries, the species values (weights, shared by both) are loaded once."""

    def __init__(self, ctype: str):
        self.ctype = ctype
        self.lines: list[str] = []
        self.count = 0

    def literal(self, value: float) -> str:
        if self.ctype == "float":
            text = np.format_float_scientific(np.float32(value), unique=True, exp_digits=2)
            return f"{text}f"
        return np.format_float_scientific(np.float64(value), unique=True, exp_digits=3)

    def operand_names(self, var: int, indent: str) -> list[str]:
        """Register names of ``var`` per node set; a species value is loaded where it is used."""
        species, array, comp = decode(var)
        if not species:
            return [f"n{array}_{comp}_{r}" for r in range(NODES_PER_CALL)]
        name = self.temp()
        self.lines.append(f"{indent}const {self.ctype} {name} = __ldg(srow{array} + {comp} * cs);")
        return [name] * NODES_PER_CALL

    def temp(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def value(self, node: _Trie, indent: str) -> list[str]:
        """Emits code computing ``node``'s value; returns the expressions naming it per set."""
        if not node.children:
            return [self.literal(node.const)] * NODES_PER_CALL
        base = self.temp()
        acc = [f"{base}_{r}" for r in range(NODES_PER_CALL)]
        t = self.ctype
        first = True
        if node.const != 0.0:
            self.lines += [f"{indent}{t} {a} = {self.literal(node.const)};" for a in acc]
            first = False
        fma = "fmaf" if t == "float" else "fma"
        for var, child in node.children.items():
            operand = self.value(child, indent)
            names = self.operand_names(var, indent)
            for a, name, op in zip(acc, names, operand, strict=True):
                if first:
                    self.lines.append(f"{indent}{t} {a} = {name} * {op};")
                else:
                    self.lines.append(f"{indent}{a} = {fma}({name}, {op}, {a});")
            first = False
        return acc


def _node_slots(program: Program, r: int = 0) -> list[int]:
    """First shared-memory slot of each node array of node set ``r`` (a slot holds one value
    per thread: BLOCK_THREADS values)."""
    set0 = r * sum(program.node_in)
    return [set0 + sum(program.node_in[:i]) for i in range(len(program.node_in))]


def _sweep_width(program: Program) -> int:
    """Components of the output evaluated by the reverse sweep (0: none, see :func:`swept`)."""
    return len(program.node_out[program.sweep.out]) if swept(program) else 0


def _sweep_slot(program: Program, comp: int) -> int:
    """Shared-memory slot accumulating component ``comp`` of the swept output."""
    return NODES_PER_CALL * sum(program.node_in) + comp


def _acc_slot(program: Program, array: int, comp: int) -> int:
    """Shared-memory slot of species output ``(array, comp)``, after the node values and the
    swept output."""
    nodes = NODES_PER_CALL * sum(program.node_in) + _sweep_width(program)
    return nodes + sum(len(a) for a in program.species_out[:array]) + comp


def _slots(program: Program) -> int:
    """Shared-memory slots of one group: staged node values, the swept output's accumulators,
    then species accumulators."""
    return _acc_slot(program, len(program.species_out), 0)


def smem_bytes(program: Program, ctype: str) -> int:
    """Dynamic shared memory per group (the launcher multiplies by the groups per block)."""
    return _slots(program) * BLOCK_THREADS * (4 if ctype == "float" else 8)


def _node_array(regs: bool) -> str:
    """Where a kernel's node values live: the register array ``nr`` (:func:`register_nodes`
    kernels, one value per index) or this thread's smem column ``nv`` (``BLOCK_THREADS`` apart)."""
    return "nr" if regs else "nv"


def _node_value(slot: int, regs: bool) -> str:
    """The node value in ``slot`` (see :func:`_node_array`)."""
    return f"{_node_array(regs)}[{slot if regs else slot * BLOCK_THREADS}]"


def _stage_rows(
    program: Program, ctype: str, indent: str, r: int, row: str, regs: bool = False
) -> list[str]:
    """Loads node ``row``'s rows (vector loads when aligned) into node set ``r`` of this
    thread's smem column (``regs``: of the register array ``nr``)."""
    lanes = 4 if ctype == "float" else 2
    lines = []
    slots = _node_slots(program, r)
    for arr, (width, slot) in enumerate(zip(program.node_in, slots, strict=True)):
        base = f"static_cast<const {ctype}*>(a.nin[{arr}]) + {row} * {width}"
        vec = lanes if width % lanes == 0 else 1
        if vec == 1:
            for i in range(width):
                lines.append(f"{indent}{_node_value(slot + i, regs)} = __ldg({base} + {i});")
            continue
        vtype = f"{ctype}{vec}"
        for j in range(width // vec):
            vptr = f"reinterpret_cast<const {vtype}*>({base})"
            lines.append(f"{indent}{{ const {vtype} v = __ldg({vptr} + {j});")
            for t, comp in enumerate("xyzw"[:vec]):
                dest = _node_value(slot + j * vec + t, regs)
                lines.append(f"{indent}  {dest} = v.{comp};")
            lines.append(f"{indent}}}")
    return lines


def _zero_node_values(first: int, count: int, indent: str, regs: bool) -> list[str]:
    """Zeros node values ``[first, first + count)`` (smem slots or ``nr`` entries)."""
    target = f"{_node_array(regs)}[{'j' if regs else f'j * {BLOCK_THREADS}'}]"
    return [
        f"{indent}#pragma unroll",
        f"{indent}for (int j = {first}; j < {first + count}; ++j) {target} = 0;",
    ]


def _coalesced_row_store(array: int, names: list[str], indent: str, node: str) -> list[str]:
    """Stores a 16-float output row per lane through the warp's node-value slots: each lane
    writes its row there (16-byte chunks swizzled against bank conflicts), then every store
    instruction of the warp writes 512 contiguous bytes (whole sectors). The node values must
    be dead (every output computed) and the node ``node`` (index expression, valid while
    ``i < hi``) the same for the whole warp."""
    # Row-major float offset `o` in the warp's 16 x 32 floats -> its slot (o >> 5), column (o & 31).
    staged = f"stage + (o >> 5) * {BLOCK_THREADS} + (o & 31)"
    lines = [
        f"{indent}{{",
        f"{indent}  const int l = threadIdx.x & 31, cw = c - l;  // the warp's first channel",
        f"{indent}  float* stage = nv - l;  // slot 0 of the warp's first column",
        f"{indent}  __syncwarp();",
    ]
    for j in range(4):
        operands = ", ".join(f'"f"({name})' for name in names[4 * j : 4 * j + 4])
        # One 16-byte shared store (the compiler splits a float4 assignment here into four).
        lines += [
            f"{indent}  {{ const int o = l * 16 + 4 * ({j} ^ ((l >> 1) & 3));",
            f'{indent}    asm volatile("st.shared.v4.f32 [%0], {{%1, %2, %3, %4}};" :: '
            f'"r"(static_cast<unsigned>(__cvta_generic_to_shared({staged}))), {operands} : '
            '"memory"); }',
        ]
    lines += [
        f"{indent}  __syncwarp();",
        f"{indent}  if (i < hi) {{",
        f"{indent}    const long long wrow = static_cast<long long>({node}) * a.c + cw;",
    ]
    for k in range(4):
        lines += [
            f"{indent}    {{ const int ch = (l + {32 * k}) >> 2, q = l & 3;",
            f"{indent}      if (cw + ch < a.c) {{",
            f"{indent}        const int o = ch * 16 + 4 * (q ^ ((ch >> 1) & 3));",
            f"{indent}        reinterpret_cast<float4*>(static_cast<float*>(a.nout[{array}]) + "
            f"(wrow + ch) * 16)[q] = *reinterpret_cast<const float4*>({staged});",
            f"{indent}      }}",
            f"{indent}    }}",
        ]
    lines += [f"{indent}  }}", f"{indent}  __syncwarp();", f"{indent}}}"]
    return lines


def _species_rows(program: Program, ctype: str, indent: str, species: str) -> list[str]:
    """Pointers ``srow<k>`` to this lane's values of species ``species`` in species array k."""
    rows = [
        f"{indent}const {ctype}* srow{arr} = static_cast<const {ctype}*>(a.sin[{arr}]) + "
        f"static_cast<long long>({species}) * {w} * a.c + (lane ? c : 0);"
        for arr, w in enumerate(program.species_in)
    ]
    missing = range(len(program.species_in), MAX_SPECIES_ARRAYS)
    return rows + [f"{indent}const {ctype}* srow{arr} = nullptr;" for arr in missing]


def _row_store(
    ctype: str, array: int, names: list[str], out: list[str], indent: str, row: str
) -> None:
    """Stores node ``row``'s output row (vector stores when aligned)."""
    width = len(names)
    lanes = 4 if ctype == "float" else 2
    vec = lanes if width % lanes == 0 else 1
    base = f"static_cast<{ctype}*>(a.nout[{array}]) + {row} * {width}"
    if vec == 1:
        for i, name in enumerate(names):
            out.append(f"{indent}({base})[{i}] = {name};")
        return
    vtype = f"{ctype}{vec}"
    for j in range(width // vec):
        parts = ", ".join(names[j * vec : (j + 1) * vec])
        out.append(f"{indent}reinterpret_cast<{vtype}*>({base})[{j}] = make_{vtype}({parts});")


_PARAMS = (
    "const {t}* {nodes}, const {t}* __restrict__ srow0, const {t}* __restrict__ srow1, long long cs"
)


def _args(regs: bool) -> str:
    """Arguments of an output function: node values from smem (``nv``) or registers (``nr``)."""
    return f"{_node_array(regs)}, srow0, srow1, cs"


def _node_vars(poly: Poly) -> set[int]:
    """The node variables (not species values) that occur in ``poly``."""
    return {v for mono in poly for v in mono if not decode(v)[0]}


def _node_value_loads(
    node_vars: set[int], program: Program, ctype: str, regs: bool = False
) -> list[str]:
    """Declarations ``n<array>_<comp>_<r>`` of the node values ``node_vars`` of every node set,
    read from this thread's smem column or (``regs``) the register array ``nr`` (the names
    :class:`_Emitter` uses)."""
    lines = []
    for var in sorted(node_vars):
        _, array, comp = decode(var)
        for r in range(NODES_PER_CALL):
            slot = _node_slots(program, r)[array] + comp
            lines.append(f"  const {ctype} n{array}_{comp}_{r} = {_node_value(slot, regs)};")
    return lines


def _output_function(
    name: str, poly: Poly, program: Program, ctype: str, inline: bool = False, regs: bool = False
) -> list[str]:
    """A function computing one output for the ``NODES_PER_CALL`` node sets (returned as a
    ``Vals`` vector).

    Non-inlined for long programs: inlined, the compiler interleaves and merges the outputs,
    keeps them all live and spills (255 registers for MACE-MP-L's backward). Short programs
    (:func:`inlined`) inline them: no call overhead, node values read from shared memory once.
    """
    vals = f"Vals<{ctype}, {NODES_PER_CALL}>"
    kind = "__forceinline__" if inline else "__noinline__"
    params = _PARAMS.format(t=ctype, nodes=_node_array(regs))
    lines = [f"__device__ {kind} {vals} {name}({params}) {{"]
    lines += _node_value_loads(_node_vars(poly), program, ctype, regs)
    em = _Emitter(ctype)
    values = em.value(build_trie(poly), "  ")
    lines += em.lines + [f"  return {vals}{{{{{', '.join(values)}}}}};", "}"]
    return lines


def _sweep_function(
    name: str,
    function: reverse_sweep.SweepFunction,
    program: Program,
    ctype: str,
    inline: bool,
    written: set[int],
) -> list[str]:
    """A function running one :class:`~.reverse_sweep.SweepFunction` for one node: it adds its
    ``gx`` contributions to the swept output's shared-memory slots (``written``: components an
    earlier function has stored, updated here)."""
    t = ctype
    kind = "__forceinline__" if inline else "__noinline__"
    params = f"{t}* nv, const {t}* __restrict__ srow0, const {t}* __restrict__ srow1, long long cs"
    lines = [f"__device__ {kind} void {name}({params}) {{"]
    used = set()
    for step in function.steps:
        if step[0] == "poly":
            used |= _node_vars(step[2])
        else:
            used |= {int(a[1:]) for a in step[2:] if isinstance(a, str) and a[0] == "v"}
    lines += _node_value_loads(used, program, t)  # one node set: swept programs only

    def name_of(operand: str) -> str:
        if operand[0] == "v":
            _, array, comp = decode(int(operand[1:]))
            return f"n{array}_{comp}_0"
        return operand

    fma = "fmaf" if t == "float" else "fma"
    em = _Emitter(ctype)
    out = em.lines
    local: set[int] = set()
    for step in function.steps:
        kind_, *args = step
        if kind_ == "poly":
            (value,) = em.value(build_trie(args[1]), "  ")
            out.append(f"  const {t} {args[0]} = {value};")
        elif kind_ == "mul":
            out.append(f"  const {t} {args[0]} = {name_of(args[1])} * {name_of(args[2])};")
        elif kind_ == "fma":
            a, b = name_of(args[1]), name_of(args[2])
            expr = f"{a} * {b}" if args[3] is None else f"{fma}({a}, {b}, {name_of(args[3])})"
            out.append(f"  const {t} {args[0]} = {expr};")
        elif kind_ == "add":
            out.append(f"  const {t} {args[0]} = {name_of(args[1])} + {name_of(args[2])};")
        else:  # acc: gx_k += a (* b)
            k, a, b = args
            term = name_of(a) if b is None else f"{name_of(a)} * {name_of(b)}"
            if k not in local:
                out.append(f"  {t} gx{k} = {term};")
                local.add(k)
            elif b is None:
                out.append(f"  gx{k} += {name_of(a)};")
            else:
                out.append(f"  gx{k} = {fma}({name_of(a)}, {name_of(b)}, gx{k});")
    for k in function.touched:
        slot = _sweep_slot(program, k) * BLOCK_THREADS
        out.append(f"  nv[{slot}] {'+=' if k in written else '='} gx{k};")
        written.add(k)
    return lines + out + ["}"]


# Reverse-sweep evaluation of VJP outputs where it needs fewer operations than the derivative
# polynomials (JAX_MACE_SYMJIT_SWEEP=0: never).
SWEEP = os.environ.get("JAX_MACE_SYMJIT_SWEEP", "1") != "0"


def _edges(poly: Poly) -> int:
    return build_trie(poly).edges() if poly else 0


def swept(program: Program) -> bool:
    """Whether ``program.sweep``'s output is generated as a reverse sweep (one node per call
    only): where :func:`.reverse_sweep.operation_count` is below the derivative polynomials'
    trie edges (MACE-MP-L's backward: 3,954 against 6,968; MACE-MP-S's: 575 against 465)."""
    if not SWEEP or program.sweep is None or NODES_PER_CALL != 1:
        return False
    return _sweep_cheaper(program)


@functools.lru_cache(maxsize=64)
def _sweep_operations(program: Program) -> int:
    return reverse_sweep.operation_count(program, _edges)


@functools.lru_cache(maxsize=64)
def _sweep_cheaper(program: Program) -> bool:
    polys = sum(_edges(p) for p in program.node_out[program.sweep.out])
    return _sweep_operations(program) < polys


# Code sizes (bytes, estimated) for which blocks of several lock-stepped groups won on H100:
# MACE-MP-L's forward (42 KB at one node per call) ran 1-6% faster grouped; MACE-MP-M's
# backward up to 17% slower at 57 KB (derivative polynomials) and, at 48 KB (reverse sweep),
# 12% slower at 10k nodes (1% faster at 50k). The window is fitted to those points. Override
# for tuning: JAX_MACE_SYMJIT_GROUPED_KB="lo,hi" (KB).
GROUPED_CODE_BYTES = tuple(
    1024 * int(v) for v in os.environ.get("JAX_MACE_SYMJIT_GROUPED_KB", "40,45").split(",")
)
CAPPED_CODE_BYTES = 320 * 1024
# Output functions are inlined (and species sums kept in registers) where the polynomial
# outputs' code is up to this size, and the reverse-sweep functions where theirs is up to
# SWEEP_INLINE_CODE_BYTES. H100, against calls: MACE-MP-M's and MP-L's forwards (16 and 42 KB)
# 13-17% faster, MP-M's forward+backward 20-24%; MP-L's backward fastest fully inlined (61 KB
# of sweep) with 3 blocks (see min_blocks).
INLINE_CODE_BYTES = 1024 * int(os.environ.get("JAX_MACE_SYMJIT_INLINE_KB", "49"))
SWEEP_INLINE_CODE_BYTES = 1024 * int(os.environ.get("JAX_MACE_SYMJIT_SWEEP_INLINE_KB", "64"))
# Resident blocks asked of ptxas for one-group kernels (``__launch_bounds__``; 0: none);
# unset: :func:`min_blocks` decides.
MIN_BLOCKS = (
    int(os.environ["JAX_MACE_SYMJIT_MIN_BLOCKS"])
    if "JAX_MACE_SYMJIT_MIN_BLOCKS" in os.environ
    else None
)
# Fully inlined kernels up to this size ask for 6 (H100, MACE-MP-S's backward, 10 KB: 80
# registers without spilling; forward+backward 3-5% faster than with 4 blocks).
SMALL_INLINED_CODE_BYTES = 12 * 1024
# Fully inlined kernels above this size ask for 3 resident blocks instead of 4 (H100, MACE-MP-L's
# backward, 103 KB: 3 blocks 9-24% faster than 4, which spill 660 bytes; 2-11% faster than 2
# blocks or no minimum; MACE-MP-M's backward, 49 KB: forward+backward 2-3% faster with 3).
LARGE_INLINED_CODE_BYTES = 1024 * int(os.environ.get("JAX_MACE_SYMJIT_LARGE_KB", "48"))


def inlined(program: Program) -> bool:
    """Whether ``program``'s output functions are inlined (see :func:`_output_function`)."""
    return _part_bytes(program, swept(program), NODES_PER_CALL)[0] <= INLINE_CODE_BYTES


def sweep_inlined(program: Program) -> bool:
    """Whether ``program``'s reverse-sweep functions are inlined (swept programs only)."""
    return _part_bytes(program, swept(program), NODES_PER_CALL)[1] <= SWEEP_INLINE_CODE_BYTES


def fully_inlined(program: Program) -> bool:
    """Whether every function of ``program``'s kernel is inlined (output and sweep functions)."""
    return inlined(program) and (not swept(program) or sweep_inlined(program))


def small_kernel(program: Program) -> bool:
    """Fully inlined and at most ``SMALL_INLINED_CODE_BYTES`` of code (MACE-MP-S's forward and
    backwards): 6 resident blocks and no barrier in the node loop."""
    return fully_inlined(program) and code_bytes(program) <= SMALL_INLINED_CODE_BYTES


def register_nodes(program: Program) -> bool:
    """Whether ``program``'s kernel holds its node values in registers (a local array the
    inlined output functions index with constants) instead of staging them in its smem column:
    small one-group kernels with one node per call and no reverse sweep (MACE-MP-S's forward
    and backwards). Staging cost a shared store and load per value and node, and kept ptxas
    from merging work across the inlined output functions: MP-S's backward loop is 722
    instructions per node in registers against 838 staged (forward+backward 1.8% faster at
    50k nodes on H100)."""
    return (
        REGISTER_NODES
        and small_kernel(program)
        and not grouped(program)
        and NODES_PER_CALL == 1
        and not swept(program)
    )


def min_blocks(program: Program) -> int:
    """``__launch_bounds__`` minimum of resident blocks for ``program``'s one-group kernel (0:
    none). 4 (<= 128 registers): left free, ptxas gave MACE-MP-L's backward (called functions)
    168 registers where 128 fit without spilling; 6 for small and 3 for large fully inlined
    kernels (``SMALL_INLINED_CODE_BYTES``, ``LARGE_INLINED_CODE_BYTES``); none above
    ``CAPPED_CODE_BYTES``, where the second-derivative kernels spill heavily when capped."""
    if code_bytes(program) > CAPPED_CODE_BYTES:
        return 0
    if MIN_BLOCKS is not None:
        return MIN_BLOCKS
    if small_kernel(program):
        return 6
    return 3 if fully_inlined(program) and code_bytes(program) > LARGE_INLINED_CODE_BYTES else 4


# Nodes per block of small kernels on unsorted nodes (MACE-MP-S's forward and bwd_x).
# The launcher's default (about eight waves of blocks) gives MP-S's forward 5 nodes per block
# at 50k nodes; at 2 the last wave's idle tail is shorter: H100, 50k forward 0.1502-0.1516 ms
# (5 processes) against 0.1531-0.1543 ms (6 processes); 1 node per block: 0.1517, 3: 0.1522, 4:
# 0.1527. MP-M's and MP-L's forwards (fewer, longer-lived blocks) were slower at 2 nodes.
UNSORTED_SMALL_CHUNK = 2


def unsorted_chunk(program: Program) -> int:
    """Nodes per block of ``program``'s kernel on unsorted nodes (``generate(by_species=False)``),
    0: the launcher's choice (``cpp/mace/symjit.cc``). ``JAX_MACE_SYMJIT_CHUNK`` overrides."""
    return UNSORTED_SMALL_CHUNK if small_kernel(program) else 0


def sync_level(program: Program) -> int:
    """Barriers in ``program``'s node loop (``SYNC_LEVEL`` if forced): none for small fully
    inlined kernels, whose code fits the instruction cache anyway (H100, MACE-MP-S: forward 2-8%
    and forward+backward 1.5-1.7% faster without; MACE-MP-M's forward+backward up to 2% slower),
    else one per loop step."""
    if SYNC_LEVEL is not None:
        return SYNC_LEVEL
    return 0 if small_kernel(program) else 1


def grouped(program: Program) -> bool:
    """Whether ``program``'s kernel is built for blocks of several groups (else one group:
    ``__launch_bounds__``, see ``generate``, and node outputs kept in registers for vector
    stores; grouped kernels store each output where computed, to leave registers for more
    warps)."""
    lo, hi = GROUPED_CODE_BYTES
    return lo <= code_bytes(program) <= hi


def code_bytes(program: Program) -> int:
    """Estimated size of the generated machine code: one 16-byte instruction per trie edge (or
    sweep operation) and node set (the arithmetic dominates)."""
    return sum(_part_bytes(program, swept(program), NODES_PER_CALL))


@functools.lru_cache(maxsize=128)
def _part_bytes(program: Program, is_swept: bool, nodes_per_call: int) -> tuple[int, int]:
    """Estimated code bytes of the polynomial outputs and of the reverse sweep."""
    node_out = list(program.node_out)
    ops = 0
    if is_swept:
        ops = _sweep_operations(program)
        del node_out[program.sweep.out]
    polys = [p for arrays in (node_out, program.species_out) for a in arrays for p in a]
    return 16 * nodes_per_call * sum(_edges(p) for p in polys), 16 * nodes_per_call * ops


# Forward kernels on unsorted nodes where possible (JAX_MACE_SYMJIT_UNSORTED=0: always sort).
UNSORTED_FORWARD = os.environ.get("JAX_MACE_SYMJIT_UNSORTED", "1") != "0"


def unsorted_capable(program: Program) -> bool:
    """Whether ``program`` can run on nodes in their own order (``generate(by_species=False)``):
    no species outputs, one node per call (each node gathers its own species' weights), and
    every node-output monomial holds a node value (so a node of a species outside ``[0, S)``,
    evaluated on zeros, gets exact zeros)."""
    if not UNSORTED_FORWARD or program.species_out or NODES_PER_CALL != 1:
        return False
    return all(
        any(not decode(v)[0] for v in mono) for arr in program.node_out for p in arr for mono in p
    )


def generate(program: Program, ctype: str, by_species: bool = True) -> str:
    """CUDA C++ source (no includes) of the kernel :data:`KERNEL_NAME` for ``program``.

    Launch with ``blockDim = (BLOCK_THREADS, groups)`` and ``groups * smem_bytes(...)`` bytes of
    dynamic shared memory; every thread of a block must reach the barriers (none returns early
    except where the whole block does). ``by_species`` (the default): blocks walk the work items
    of the species sort; else (:func:`unsorted_capable` programs only) block ``x`` owns nodes
    ``[x * chunk, (x + 1) * chunk)`` in their own order and ``SymjitArgs::perm`` holds each
    node's species: no sort needed.
    """
    if ctype not in ("float", "double"):
        raise ValueError(f"ctype must be 'float' or 'double', got {ctype!r}")
    if not by_species and not unsorted_capable(program):
        raise ValueError(f"program {program.name!r} cannot run on unsorted nodes")
    nin, sin = program.node_in, program.species_in
    nout = [len(a) for a in program.node_out]
    sout = [len(a) for a in program.species_out]
    if len(nin) > MAX_NODE_ARRAYS or len(sin) > MAX_SPECIES_ARRAYS:
        raise ValueError("too many input arrays for the kernel argument block")
    if len(nout) > MAX_NODE_OUTPUTS or len(sout) > MAX_SPECIES_OUTPUTS:
        raise ValueError("too many output arrays for the kernel argument block")
    t = ctype
    is_grouped = grouped(program)
    is_inlined = inlined(program)
    sweep_inline = swept(program) and sweep_inlined(program)
    regs = register_nodes(program)
    args = _args(regs)
    functions: list[str] = []
    acc_regs: list[str] = []  # inlined: species sums in registers, stored once at the end
    acc_store: list[str] = []
    ind = "    "
    sync = sync_level(program)
    sync_call = [f"{ind}__syncthreads();"] if sync >= 2 else []
    # Node set r is node i + r of the chunk, or zeros past its end and in lanes past the last
    # channel (every species-output monomial holds a node value, so zeros add nothing there;
    # node outputs are stored only for real nodes). Every thread makes every call, so the
    # barriers are reached by all.
    body = []
    nodes = sum(nin)
    if regs:
        body.append(f"{ind}{t} nr[{nodes}];  // node values (registers: constant indices only)")
    if not by_species:  # one node per call: its species' weight rows, row = node * C + c
        body += [
            f"{ind}const bool has0 = act;",
            f"{ind}const int sp0 = has0 ? a.perm[i] : -1;",
            f"{ind}const bool valid0 = sp0 >= 0 && sp0 < a.s;",
            f"{ind}const long long row0 = has0 ? static_cast<long long>(i) * a.c + c : 0;",
            *_species_rows(program, t, ind, "valid0 ? sp0 : 0"),
            f"{ind}if (has0 && valid0) {{",
            *_stage_rows(program, t, ind + "  ", 0, "row0", regs),
            f"{ind}}} else {{",
            *_zero_node_values(0, nodes, ind + "  ", regs),
            f"{ind}}}",
        ]
    for r in range(NODES_PER_CALL if by_species else 0):
        body += [
            f"{ind}const bool has{r} = act && i + {r} < hi;",
            f"{ind}const long long row{r} = has{r} ? "
            f"static_cast<long long>(a.perm[start + i + {r}]) * a.c + c : 0;",
            f"{ind}if (has{r}) {{",
            *_stage_rows(program, t, ind + "  ", r, f"row{r}", regs),
            f"{ind}}} else {{",
            *_zero_node_values(r * nodes, nodes, ind + "  ", regs),
            f"{ind}}}",
        ]
    vals = f"Vals<{t}, {NODES_PER_CALL}>"
    # Whole-warp row stores, after the species outputs: the node values are dead by then, and
    # their slots stage the rows.
    coalesced = (
        COALESCED_STORES
        and small_kernel(program)
        and not is_grouped
        and t == "float"
        and NODES_PER_CALL == 1
        and not swept(program)
        and nodes >= 16
    )
    staged_stores: list[str] = []
    for arr, polys in enumerate(program.node_out):
        width = len(polys)
        if swept(program) and arr == program.sweep.out:
            written: set[int] = set()
            for i, function in enumerate(reverse_sweep.plan(program)):
                fname = f"sweep{arr}_{i}"
                functions += _sweep_function(fname, function, program, t, sweep_inline, written)
                body.append(f"{ind}{fname}(nv, srow0, srow1, cs);")
                body += sync_call
            zero = _Emitter(t).literal(0.0)
            names = [
                f"nv[{_sweep_slot(program, k) * BLOCK_THREADS}]" if k in written else zero
                for k in range(width)
            ]
            body.append(f"{ind}if (has0) {{")
            _row_store(t, arr, names, body, ind + "  ", "row0")
            body.append(f"{ind}}}")
            continue
        names = [[] for _ in range(NODES_PER_CALL)]
        for comp, poly in enumerate(polys):
            for r in range(NODES_PER_CALL):
                names[r].append(f"o{arr}_{comp}.v[{r}]")
            fname = f"node_out{arr}_{comp}"
            if poly:
                functions += _output_function(fname, poly, program, t, is_inlined, regs)
            body.append(
                f"{ind}const {vals} o{arr}_{comp} = " + (f"{fname}({args});" if poly else "{};")
            )
            if poly:
                body += sync_call
            if is_grouped:  # lanes stride `width` values apart; L2 merges the sectors
                body += [
                    f"{ind}if (has{r}) static_cast<{t}*>(a.nout[{arr}])"
                    f"[row{r} * {width} + {comp}] = o{arr}_{comp}.v[{r}];"
                    for r in range(NODES_PER_CALL)
                ]
        if coalesced and width == 16:
            node = "a.perm[start + i]" if by_species else "i"
            staged_stores += _coalesced_row_store(arr, names[0], ind, node)
        elif not is_grouped:
            for r in range(NODES_PER_CALL):
                body.append(f"{ind}if (has{r}) {{")
                _row_store(t, arr, names[r], body, ind + "  ", f"row{r}")
                body.append(f"{ind}}}")
    for arr, polys in enumerate(program.species_out):
        for comp, poly in enumerate(polys):
            if not poly:
                continue
            fname = f"species_out{arr}_{comp}"
            functions += _output_function(fname, poly, program, t, is_inlined, regs)
            slot = _acc_slot(program, arr, comp)
            total = " + ".join(f"v.v[{r}]" for r in range(NODES_PER_CALL))
            target = f"sacc{arr}_{comp}" if is_inlined else f"nv[{slot * BLOCK_THREADS}]"
            body.append(f"{ind}{{ const {vals} v = {fname}({args});")
            body.append(f"{ind}  {target} += {total}; }}")
            body += sync_call
            if is_inlined:
                acc_regs.append(f"  {t} sacc{arr}_{comp} = 0;")
                acc_store.append(f"  nv[{slot * BLOCK_THREADS}] = sacc{arr}_{comp};")
    body += staged_stores
    if sync == 1:
        body.append(f"{ind}__syncthreads();")

    zero_rows = [
        f"      static_cast<{t}*>(a.nout[{arr}])[row * {width} + {i}] = 0;"
        for arr, width in enumerate(nout)
        for i in range(width)
    ]
    acc0, nacc = _acc_slot(program, 0, 0), sum(sout)
    acc_zero = [f"  for (int j = {acc0}; j < {acc0 + nacc}; ++j) nv[j * {BLOCK_THREADS}] = 0;"]
    group_stride = _slots(program) * BLOCK_THREADS
    acc_flush = [
        "  __syncthreads();  // every group's sums are in shared memory",
        "  if (threadIdx.y != 0 || !lane) return;",
    ]
    for arr, w in enumerate(sout):
        for i in range(w):
            if not program.species_out[arr][i]:
                continue
            slot = _acc_slot(program, arr, i) * BLOCK_THREADS
            acc_flush += [
                f"  {{ {t} sum = 0;",
                f"    for (int q = 0; q < groups; ++q) "
                f"sum += smem_values[q * {group_stride} + {slot} + threadIdx.x];",
                f"    atomicAdd(static_cast<{t}*>(a.sout[{arr}]) + "
                f"(static_cast<long long>(s) * {w} + {i}) * a.c + c, sum); }}",
            ]
    srows = _species_rows(program, t, "  ", "s")
    blocks = min_blocks(program)
    min_blocks_arg = f", {blocks}" if blocks else ""
    bounds = f"__launch_bounds__({BLOCK_THREADS}{min_blocks_arg}) "
    prologue = [
        "  const int item = blockIdx.x;",
        "  if (item >= *a.nitems) return;",
        "  const int s = a.items[4 * item + 0];",
        "  const int start = a.items[4 * item + 1];",
        "  const int count = a.items[4 * item + 2];",
        "  const int lo = blockIdx.y * a.chunk;",
        "  if (lo >= count) return;",
        "  const int hi = min(count, lo + a.chunk);",
        "  if (s < 0) {  // species outside [0, S): zero node outputs, no species sums",
        "    if (!lane) return;",
        "    for (int i = lo + threadIdx.y; i < hi; i += groups) {",
        "      const long long row = static_cast<long long>(a.perm[start + i]) * a.c + c;",
        *zero_rows,
        "    }",
        "    return;",
        "  }",
    ]
    unsorted_prologue = [
        "  const int lo = blockIdx.x * a.chunk;",
        "  if (lo >= a.n) return;",
        "  const int hi = min(a.n, lo + a.chunk);",
    ]
    order = "by species" if by_species else "unsorted"
    src = [
        f"// Generated by jax_mace.symmetric_contraction.codegen: program {program.name}, {t}, "
        f"{order}.",
        ARGS_STRUCT,
        *functions,
        f'extern "C" __global__ void {"" if is_grouped else bounds}{KERNEL_NAME}('
        "const __grid_constant__ SymjitArgs a) {",
        f"  extern __shared__ {t} smem_values[];",
        "  const int groups = blockDim.y;",
        f"  {t}* nv = smem_values + threadIdx.y * {group_stride} + threadIdx.x;  // own column",
        f"  const int c = blockIdx.z * {BLOCK_THREADS} + threadIdx.x;",
        "  const bool lane = c < a.c;",
        *(prologue if by_species else unsorted_prologue),
        "  const long long cs = a.c;",
        *(srows if by_species else []),
        *(acc_zero if nacc and not is_inlined else []),
        *acc_regs,
        "#pragma unroll 1",
        f"  for (int base = lo; base < hi; base += groups * {NODES_PER_CALL}) {{",
        f"    const int i = base + threadIdx.y * {NODES_PER_CALL};",
        "    const bool act = lane && i < hi;",
        *body,
        "  }",
        *acc_store,
        *(acc_flush if nacc else []),
        "}",
        "",
    ]
    return "\n".join(src)


def source_key(source: str) -> int:
    """A stable positive 63-bit key of a kernel source (registry key on the C++ side)."""
    return int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "little") >> 1
