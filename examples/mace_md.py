"""Molecular dynamics with a trained MACE model through ASE.

    python examples/mace_md.py runs/mace_aspirin_cpu/model --steps 100

Starts from the first aspirin frame of the rMD17 test file (or any structure ASE reads), runs
NVE velocity Verlet at 0.5 fs and prints the total energy drift.
"""

from __future__ import annotations

import argparse
import os
import sys

import ase.io
import numpy as np
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jax_mace.calculator import MACECalculator  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="directory written by training (<output.dir>/model)")
    p.add_argument("--structure", default="../shared/data/rmd17_aspirin_test.xyz")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--temperature", type=float, default=300.0, help="initial temperature (K)")
    args = p.parse_args()

    atoms = ase.io.read(args.structure, index=0)
    atoms.calc = MACECalculator(args.model)
    rng = np.random.default_rng(0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    e0 = atoms.get_total_energy()

    def report():
        e = atoms.get_total_energy()
        t = atoms.get_temperature()
        drift = 1000 * (e - e0)
        print(f"step {dyn.nsteps:5d}  E_tot {e:.5f} eV  drift {drift:+.2f} meV  T {t:.0f} K")

    dyn.attach(report, interval=max(1, args.steps // 10))
    dyn.run(args.steps)


if __name__ == "__main__":
    main()
