"""Tests of the simulator's command line (``gna-simulate`` / ``python -m simulator``) and plots."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import simulator
from simulator import cli
from simulator.table import render
from simulator.use_cases import USE_CASES

HUNYUAN = "--shape 30 48 80 --window 18 24 24 --stride 16 8 8 --q-tile 2 8 8 --kv-tile 2 8 8"


def run(capsys, argv: str):
    code = cli.main(argv.split())
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_lists_every_tiling(capsys):
    code, out, _ = run(capsys, HUNYUAN + " --attention-fraction 0.607")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("grid 30x48x80  window 18x24x24  stride 16x8x8")
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert set(rows) == {"static", "dynamic", "1d"}
    assert rows["static"][7] == "11.11x" and rows["static"][10] == "yes"
    assert rows["1d"][1] == "128"  # 1d uses prod(tile) tokens per tile
    e2e = 1 / ((1 - 0.607) + 0.607 / (900 / 81))
    assert rows["static"][-1] == f"{e2e:.2f}x"


def test_json_matches_api(capsys):
    code, out, _ = run(capsys, HUNYUAN + " --tiling static --format json --visited 3 2 1")
    assert code == 0
    payload = json.loads(out)
    (summary,) = payload["results"]
    res = simulator.simulate(
        (30, 48, 80), (18, 24, 24), (16, 8, 8), q_tile=(2, 8, 8), kv_tile=(2, 8, 8)
    )
    assert summary == pytest.approx(res.summary())
    assert payload["visited_kv_tile_origins"] == res.visited_kv_tiles((3, 2, 1)).tolist()


def test_markdown_and_recommend(capsys):
    code, out, _ = run(
        capsys,
        "--shape 64 64 --window 16 --tiling static --format markdown "
        "--recommend --q-tiles 8,8 16,8 --kv-tiles 8x8 --top 3",
    )
    assert code == 0
    assert out.count("|---|") >= 2
    assert "recommended configurations" in out
    recs = simulator.recommend((64, 64), 16, q_tiles=[(8, 8), (16, 8)], kv_tiles=[(8, 8)], top=3)
    assert f"| {recs[0].speedup_bound:.2f}x |" in out


def test_causal_and_dilation_flags(capsys):
    code, out, _ = run(
        capsys, "--shape 32 --window 4 --dilation 2 --causal --tiling dynamic --format json"
    )
    (summary,) = json.loads(out)["results"]
    assert summary["causal"] == [True] and summary["dilation"] == [2]
    code, out, _ = run(capsys, "--shape 8 8 --window 4 --causal 0 1 --tiling static --format json")
    assert json.loads(out)["results"][0]["causal"] == [False, True]


def test_use_cases_table(capsys):
    code, out, _ = run(capsys, "--use-cases --tiling static --format markdown")
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(USE_CASES)
    flux = [
        line for line in lines if "FLUX" in line and "| 16x16 |" in line and "16x8 / 16x8" in line
    ]
    assert flux and "| 10.24x |" in flux[0] and "| yes |" in flux[0]
    hunyuan = [line for line in lines if "Hunyuan" in line and "16x8x8" in line]
    assert "| 11.11x |" in hunyuan[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        ("--shape 20 --window 40", "kernel_size * dilation must be <="),
        ("--shape 20 --window 4 --q-tile 0", "q_tile entries must be positive"),
        ("--shape 20 20 --window 4 --kv-tile 4 4 4 --tiling static", "kv_tile must have one entry"),
        ("--shape 20 --window 4 --attention-fraction 2", "attention_fraction must be in [0, 1]"),
        ("--window 4", "--shape and --window are required"),
    ],
)
def test_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv.split())
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "gna.png"
    code, _, err = run(
        capsys, f"--shape 12 16 20 --window 4 6 8 --stride 2 3 4 --tiling static --plot {path}"
    )
    assert code == 0 and "wrote" in err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path1d = tmp_path / "gna1d.png"
    code, _, _ = run(
        capsys, f"--shape 12 16 --window 4 6 --tiling 1d --q-tile 16 --kv-tile 16 --plot {path1d}"
    )
    assert path1d.stat().st_size > 0


def test_heatmap_image_layout():
    from simulator.plot import heatmap_image

    res = simulator.simulate((30, 48, 80), (18, 24, 24), 1, q_tile=(2, 8, 8), kv_tile=(2, 8, 8))
    image, _ = heatmap_image(res)
    counts = res.kv_tiles_per_q_tile[0, 0, 0]
    assert np.nansum(image) == counts.sum()
    assert np.nanmax(image) == res.max_kv_tiles
    flat, _ = heatmap_image(simulator.simulate((64,), 8, q_tile=(8,), kv_tile=(8,)))
    assert flat.shape == (1, 8)


def test_render_text_alignment():
    text = render(["a", "num"], [["x", "1.5x"], ["long", "10.25x"]])
    lines = text.splitlines()
    assert lines[2].endswith("  1.5x") and lines[3].endswith("10.25x")
    assert len({len(line) for line in lines[2:]}) == 1


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "simulator", *HUNYUAN.split(), "--tiling", "static"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "11.11x" in out.stdout
