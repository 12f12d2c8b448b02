"""Run config of the ``promote`` flow (to be merged into landing/config.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from landing.config import DataConfig, LatencyConfig, StrictModel


class PromotionGates(StrictModel):
    """What a challenger must show before it replaces the champion; every gate must pass."""

    min_accuracy_gain: float = Field(
        0.0, ge=-1, le=1, description="challenger − champion held-out accuracy; negative = largest loss accepted"
    )
    max_latency_p50_ms: float | None = Field(
        None, gt=0, description="batch-1 model-only p50 bound at latency_seq_len on the first latency target"
    )
    latency_seq_len: int = Field(16, ge=1, le=512)
    require_parity: bool = Field(True, description="the challenger's version must carry a landing.parity record")


class PromoteRunConfig(StrictModel):
    flow: Literal["promote"] = "promote"
    name: str = "promote"
    experiment: str = "landing"
    seed: int = Field(42, description="must match the training run's seed when the held-out split is eval_size")
    data: DataConfig
    registered_model: str = Field(min_length=1, description="base name; the ONNX versions live in <name>-onnx")
    gates: PromotionGates = PromotionGates()
    latency: LatencyConfig = LatencyConfig()
