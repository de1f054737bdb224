"""MACE hyperparameters and the MACE-MP-0 presets (``mace.md`` section 1)."""

from __future__ import annotations

import dataclasses

import e3nn_jax as e3nn


@dataclasses.dataclass(frozen=True)
class MACEConfig:
    """Everything needed to rebuild a MACE model (saved next to its weights).

    Attributes:
        atomic_numbers: the element table; species index ``i`` is element ``atomic_numbers[i]``.
        r_max: cutoff radius (A).
        num_bessel: Bessel radial basis functions.
        num_polynomial_cutoff: power ``p`` of the polynomial envelope.
        max_ell: highest ``l`` of the edge spherical harmonics (and of the atomic basis ``A``).
        num_interactions: message-passing layers.
        hidden_irreps: node features, uniform multiplicity, e.g. ``"128x0e+128x1o"``. The last
            layer keeps only its scalars (as MACE does).
        correlation: body order of the product basis minus one (1..3).
        radial_mlp: hidden widths of the MLP from radial basis to tensor-product weights.
        readout_mlp: hidden width of the last layer's readout MLP.
        avg_num_neighbors: divides the message sum (dataset statistic).
        e0s: per-species reference energies (eV); zeros if None.
        scale, shift: node interaction energy ``= scale * readouts + shift`` (eV).
        residual_first: residual skip on the first layer too (MACE: False).
        learnable_shift: add a trainable per-element energy offset (starts at zero). Forces do
            not depend on it, so only the energy loss moves it; with forces weighted 1000:1 it
            stops the mean energy from drifting while the forces are fitted.
        contraction_backend: backend of the symmetric contraction (None = default).
    """

    atomic_numbers: tuple[int, ...]
    r_max: float = 5.0
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 3
    num_interactions: int = 2
    hidden_irreps: str = "128x0e+128x1o"
    correlation: int = 3
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    readout_mlp: int = 16
    avg_num_neighbors: float = 1.0
    e0s: tuple[float, ...] | None = None
    scale: float = 1.0
    shift: float = 0.0
    residual_first: bool = False
    learnable_shift: bool = True
    contraction_backend: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "atomic_numbers", tuple(int(z) for z in self.atomic_numbers))
        object.__setattr__(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        if self.e0s is not None:
            object.__setattr__(self, "e0s", tuple(float(e) for e in self.e0s))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the rule it breaks."""
        rules = [
            (len(self.atomic_numbers) > 0, "atomic_numbers must not be empty"),
            (
                len(set(self.atomic_numbers)) == len(self.atomic_numbers),
                "atomic_numbers must be distinct",
            ),
            (self.r_max > 0, "r_max must be > 0"),
            (self.num_bessel >= 1, "num_bessel must be >= 1"),
            (self.num_polynomial_cutoff >= 1, "num_polynomial_cutoff must be >= 1"),
            (0 <= self.max_ell <= 4, "max_ell must be in 0..4"),
            (self.num_interactions >= 1, "num_interactions must be >= 1"),
            (1 <= self.correlation <= 3, "correlation must be in 1..3"),
            (self.avg_num_neighbors > 0, "avg_num_neighbors must be > 0"),
            (
                self.e0s is None or len(self.e0s) == len(self.atomic_numbers),
                "e0s must have one entry per element of atomic_numbers",
            ),
        ]
        for ok, rule in rules:
            if not ok:
                raise ValueError(f"MACEConfig: {rule}")
        self.channels_and_irreps()

    @property
    def num_species(self) -> int:
        return len(self.atomic_numbers)

    def channels_and_irreps(self) -> tuple[int, e3nn.Irreps]:
        """``(C, per-channel irreps)`` of ``hidden_irreps``, e.g. ``(128, 0e+1o)``."""
        irreps = e3nn.Irreps(self.hidden_irreps)
        muls = {mul for mul, _ in irreps}
        if len(muls) != 1 or not irreps:
            raise ValueError(
                f"MACEConfig: hidden_irreps must have one multiplicity, got {self.hidden_irreps!r}"
            )
        per_channel = e3nn.Irreps([(1, ir) for _, ir in irreps]).simplify()
        if "0e" not in [str(ir) for _, ir in per_channel]:
            raise ValueError("MACEConfig: hidden_irreps must contain scalars (0e)")
        return muls.pop(), per_channel

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["atomic_numbers"] = list(self.atomic_numbers)
        d["radial_mlp"] = list(self.radial_mlp)
        d["e0s"] = None if self.e0s is None else list(self.e0s)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MACEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"MACEConfig: unknown field(s) {unknown}")
        return cls(**d)

    def replace(self, **changes) -> MACEConfig:
        return dataclasses.replace(self, **changes)


_MP0 = dict(
    atomic_numbers=tuple(range(1, 90)),
    r_max=6.0,
    num_bessel=10,
    num_polynomial_cutoff=5,
    max_ell=3,
    num_interactions=2,
    correlation=3,
    radial_mlp=(64, 64, 64),
    readout_mlp=16,
    avg_num_neighbors=44.0,
)

PRESETS = {
    "mp0-small": dict(_MP0, hidden_irreps="128x0e"),
    "mp0-medium": dict(_MP0, hidden_irreps="128x0e+128x1o"),
    "mp0-large": dict(_MP0, hidden_irreps="128x0e+128x1o+128x2e"),
}


def preset(name: str, **overrides) -> MACEConfig:
    """MACE-MP-0 ``small``/``medium``/``large`` hyperparameters (89 elements), with overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return MACEConfig(**(PRESETS[name] | overrides))
