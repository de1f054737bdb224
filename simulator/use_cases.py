"""The GNA paper's use cases (token grids, windows, strides, tile shapes, attention shares)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UseCase:
    """One configuration of a model from the GNA paper.

    ``attention_fraction`` is the share of end-to-end runtime spent in self-attention (paper).
    """

    model: str
    input_shape: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...]
    q_tile: tuple[int, ...]
    kv_tile: tuple[int, ...]
    attention_fraction: float


_HUNYUAN = dict(model="HunyuanVideo 720p", input_shape=(30, 48, 80), window=(18, 24, 24))
_FLUX = dict(model="FLUX.1-dev 4K", input_shape=(256, 256), window=(80, 80))
_COSMOS = dict(model="Cosmos-7B 720p", input_shape=(16, 44, 80))

USE_CASES: tuple[UseCase, ...] = (
    UseCase(
        **_HUNYUAN, stride=(1, 1, 1), q_tile=(2, 8, 8), kv_tile=(2, 8, 8), attention_fraction=0.607
    ),
    UseCase(
        **_HUNYUAN, stride=(16, 8, 8), q_tile=(2, 8, 8), kv_tile=(2, 8, 8), attention_fraction=0.607
    ),
    UseCase(
        **_HUNYUAN, stride=(16, 8, 8), q_tile=(4, 8, 8), kv_tile=(2, 8, 8), attention_fraction=0.607
    ),
    UseCase(**_FLUX, stride=(1, 1), q_tile=(16, 8), kv_tile=(16, 8), attention_fraction=0.518),
    UseCase(**_FLUX, stride=(16, 1), q_tile=(16, 8), kv_tile=(16, 8), attention_fraction=0.518),
    UseCase(**_FLUX, stride=(16, 16), q_tile=(16, 8), kv_tile=(16, 8), attention_fraction=0.518),
    UseCase(**_FLUX, stride=(16, 16), q_tile=(16, 16), kv_tile=(16, 8), attention_fraction=0.518),
    UseCase(
        **_COSMOS,
        window=(16, 32, 48),
        stride=(1, 1, 1),
        q_tile=(2, 8, 8),
        kv_tile=(2, 8, 8),
        attention_fraction=0.587,
    ),
    UseCase(
        **_COSMOS,
        window=(16, 32, 48),
        stride=(1, 8, 16),
        q_tile=(2, 8, 8),
        kv_tile=(2, 8, 8),
        attention_fraction=0.587,
    ),
    UseCase(
        **_COSMOS,
        window=(16, 24, 16),
        stride=(1, 1, 1),
        q_tile=(2, 8, 8),
        kv_tile=(2, 8, 8),
        attention_fraction=0.587,
    ),
    UseCase(
        **_COSMOS,
        window=(16, 24, 16),
        stride=(1, 8, 16),
        q_tile=(2, 8, 8),
        kv_tile=(2, 8, 8),
        attention_fraction=0.587,
    ),
)
