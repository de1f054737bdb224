"""Command line interface: ``python -m simulator`` / ``gna-simulate``.

Examples::

    gna-simulate --shape 30 48 80 --window 18 24 24 --stride 16 8 8 --q-tile 2 8 8 --kv-tile 2 8 8
    gna-simulate --shape 256 256 --window 80 --stride 16 --tiling all --attention-fraction 0.518
    gna-simulate --shape 256 256 --window 80 --recommend --q-tiles 16,8 16,16 --kv-tiles 16,8
    gna-simulate --use-cases --format markdown
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Sequence

from simulator.engine import TILINGS, simulate
from simulator.recommend import recommend
from simulator.result import SimulationResult, amdahl
from simulator.table import render, shape_str
from simulator.use_cases import USE_CASES


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "t", "yes", "y"):
        return True
    if low in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (0/1/true/false), got {text!r}")


def _tile(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a tile shape like 2,8,8, got {text!r}"
        ) from None


def _one(values):
    """argparse lists -> an int (one value) or a tuple (several)."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gna-simulate",
        description="Tile-level speedup bounds of Generalized Neighborhood Attention (GNA).",
    )
    cfg = p.add_argument_group("configuration")
    cfg.add_argument("--shape", type=int, nargs="+", help="token grid, e.g. 30 48 80")
    cfg.add_argument("--window", type=int, nargs="+", help="window (kernel_size) per axis")
    cfg.add_argument("--stride", type=int, nargs="+", default=[1])
    cfg.add_argument("--dilation", type=int, nargs="+", default=[1])
    cfg.add_argument(
        "--causal", type=_bool, nargs="*", default=None, help="bare flag = all axes causal"
    )
    cfg.add_argument("--q-tile", type=int, nargs="+", help="Q tile shape (tokens per tile for 1d)")
    cfg.add_argument("--kv-tile", type=int, nargs="+", help="KV tile shape")
    cfg.add_argument(
        "--tiling",
        choices=[*TILINGS, "all"],
        default="all",
        help="'all' = static, dynamic and 1d (1d uses prod(tile) tokens per tile)",
    )
    e2e = p.add_argument_group("end-to-end (Amdahl) bound")
    e2e.add_argument("--attention-fraction", type=float, help="share of runtime in attention")
    e2e.add_argument("--sparse-steps", type=int, default=1, help="steps using GNA (m)")
    e2e.add_argument("--total-steps", type=int, default=1, help="total steps (M)")
    rec = p.add_argument_group("recommend")
    rec.add_argument("--recommend", action="store_true", help="search strides and tile shapes")
    rec.add_argument("--q-tiles", type=_tile, nargs="+", help="candidate Q tiles, e.g. 2,8,8")
    rec.add_argument("--kv-tiles", type=_tile, nargs="+", help="candidate KV tiles")
    rec.add_argument("--strides", type=int, nargs="+", help="candidate strides (all axes)")
    rec.add_argument("--window-slack", type=int, default=0, help="also try window +- slack")
    rec.add_argument("--top", type=int, default=10)
    rec.add_argument("--perfect-only", action="store_true")
    out = p.add_argument_group("output")
    out.add_argument("--use-cases", action="store_true", help="table of the GNA paper's cases")
    out.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    out.add_argument("--plot", metavar="PNG", help="heat map + speedup-vs-stride chart")
    out.add_argument(
        "--visited", type=int, nargs="+", metavar="T", help="list KV tiles of this Q tile"
    )
    return p


HEADERS = [
    "tiling",
    "Q tile",
    "KV tile",
    "Q tiles",
    "KV tiles",
    "max KV/Q",
    "mean KV/Q",
    "speedup bound",
    "mean bound",
    "FLOP bound",
    "perfect",
]


def _row(r: SimulationResult) -> list[str]:
    return [
        r.tiling,
        shape_str(r.q_tile),
        shape_str(r.kv_tile),
        str(r.num_q_tiles),
        str(r.total_kv_tiles),
        str(r.max_kv_tiles),
        f"{r.mean_kv_tiles:.1f}",
        f"{r.speedup_bound:.2f}x",
        f"{r.mean_bound:.2f}x",
        f"{r.flop_bound:.2f}x",
        "yes" if r.perfectly_block_sparse else "no",
    ]


def _run_config(args, parser) -> int:
    if not args.shape or not args.window:
        parser.error("--shape and --window are required (or use --use-cases)")
    causal = None if args.causal is None else (_one(args.causal) if args.causal else True)
    common = dict(
        input_shape=tuple(args.shape),
        window=_one(args.window),
        stride=_one(args.stride),
        dilation=_one(args.dilation),
        causal=False if causal is None else causal,
    )
    tilings = list(TILINGS) if args.tiling == "all" else [args.tiling]
    results = []
    for tiling in tilings:
        q, kv = _one(args.q_tile), _one(args.kv_tile)
        if tiling == "1d":
            q = None if q is None else math.prod(args.q_tile)
            kv = None if kv is None else math.prod(args.kv_tile)
        results.append(simulate(**common, q_tile=q, kv_tile=kv, tiling=tiling))
    e2e = None
    if args.attention_fraction is not None:
        e2e = [
            r.end_to_end(args.attention_fraction, args.sparse_steps, args.total_steps)
            for r in results
        ]
    recs = []
    if args.recommend:
        recs = recommend(
            common["input_shape"],
            common["window"],
            common["dilation"],
            common["causal"],
            q_tiles=args.q_tiles or ([results[0].q_tile] if args.q_tile else None),
            kv_tiles=args.kv_tiles or ([results[0].kv_tile] if args.kv_tile else None),
            tiling=args.tiling if args.tiling in ("static", "dynamic") else "static",
            strides=args.strides,
            window_slack=args.window_slack,
            top=args.top,
            perfect_only=args.perfect_only,
        )
    visited = None
    if args.visited is not None:
        first = results[0]
        index = args.visited[0] if first.tiling == "1d" else tuple(args.visited)
        visited = first.visited_kv_tiles(index)

    if args.format == "json":
        payload = {"results": [r.summary() for r in results]}
        if e2e is not None:
            for s, v in zip(payload["results"], e2e, strict=True):
                s["end_to_end_bound"] = v
        if recs:
            payload["recommendations"] = [r.as_dict() for r in recs]
        if visited is not None:
            payload["visited_kv_tile_origins"] = visited.tolist()
        print(json.dumps(payload, indent=2))
    else:
        p = results[0].params
        print(
            f"grid {shape_str(p.spatial_shape)}  window {shape_str(p.kernel_size)}  "
            f"stride {shape_str(p.stride)}  dilation {shape_str(p.dilation)}  "
            f"causal {shape_str(p.is_causal)}"
        )
        headers, rows = list(HEADERS), [_row(r) for r in results]
        if e2e is not None:
            headers.append(f"E2E (f={args.attention_fraction:g})")
            rows = [row + [f"{v:.2f}x"] for row, v in zip(rows, e2e, strict=True)]
        print(render(headers, rows, args.format))
        if recs:
            print("\nrecommended configurations (by speedup bound):")
            print(
                render(
                    [
                        "window",
                        "stride",
                        "Q tile",
                        "KV tile",
                        "speedup bound",
                        "mean bound",
                        "FLOP bound",
                        "perfect",
                    ],
                    [
                        [
                            shape_str(r.window),
                            shape_str(r.stride),
                            shape_str(r.q_tile),
                            shape_str(r.kv_tile),
                            f"{r.speedup_bound:.2f}x",
                            f"{r.mean_bound:.2f}x",
                            f"{r.flop_bound:.2f}x",
                            "yes" if r.perfectly_block_sparse else "no",
                        ]
                        for r in recs
                    ],
                    args.format,
                )
            )
        if visited is not None:
            print(f"\nKV tile origins visited by Q tile {args.visited} ({results[0].tiling}):")
            cells = ["(" + ",".join(str(v) for v in row) + ")" for row in visited.tolist()]
            print(textwrap.fill(" ".join(cells), width=100))
    if args.plot:
        from simulator.plot import plot_result

        plot_result(results[0], args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _run_use_cases(args) -> int:
    tilings = list(TILINGS) if args.tiling == "all" else [args.tiling]
    headers = [
        "model",
        "grid",
        "window",
        "stride",
        "Q / KV tile",
        "tiling",
        "FLOP bound",
        "speedup bound",
        "mean bound",
        "perfect",
        "E2E bound (f)",
    ]
    rows, records = [], []
    for case in USE_CASES:
        for tiling in tilings:
            q, kv = case.q_tile, case.kv_tile
            if tiling == "1d":
                q, kv = math.prod(q), math.prod(kv)
            r = simulate(
                case.input_shape, case.window, case.stride, q_tile=q, kv_tile=kv, tiling=tiling
            )
            f = case.attention_fraction
            e2e = amdahl(r.speedup_bound, f, args.sparse_steps, args.total_steps)
            rows.append(
                [
                    case.model,
                    shape_str(case.input_shape),
                    shape_str(case.window),
                    shape_str(case.stride),
                    f"{shape_str(r.q_tile)} / {shape_str(r.kv_tile)}",
                    tiling,
                    f"{r.flop_bound:.2f}x",
                    f"{r.speedup_bound:.2f}x",
                    f"{r.mean_bound:.2f}x",
                    "yes" if r.perfectly_block_sparse else "no",
                    f"{e2e:.2f}x ({f:.1%})",
                ]
            )
            records.append(
                {
                    "model": case.model,
                    **r.summary(),
                    "attention_fraction": f,
                    "end_to_end_bound": e2e,
                }
            )
    if args.format == "json":
        print(json.dumps(records, indent=2))
    else:
        print(render(headers, rows, args.format))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.use_cases:
            return _run_use_cases(args)
        return _run_config(args, parser)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
