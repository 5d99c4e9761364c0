"""What to prune and how to share what is left, declared once: the recipe's ``prune:`` section (which
adds its fine-tuning) and the options of ``distiq prune`` are these models; ``dq.prune``, the structured
pruner and ``dq.prune.share_weights`` take the same names with the same defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCOPE = "global"


class PruneSpec(BaseModel):
    """How much to remove, and how it is chosen."""

    model_config = ConfigDict(extra="forbid")

    amount: float = Field(0.5, ge=0, lt=1, description="Fraction of weights (or channels) to remove.")
    structured: bool = Field(False, description="Remove whole channels/neurons instead of single weights.")
    scope: Literal["global", "layer"] = Field(
        SCOPE, description="global (one ranking over all layers) or layer (each layer loses the amount)."
    )
    importance: str = Field("l1", description="Channel ranking: l1, l2 or bn (BatchNorm scale).")
    exclude: list[str] = Field(default_factory=list, description="Layer paths to leave unpruned.")
    round_to: int | None = Field(
        None,
        ge=1,
        description="Structured: keep a multiple of this many channels per layer (8 keeps int8 convs fast).",
    )

    @model_validator(mode="after")
    def _round_to_needs_channels(self) -> PruneSpec:
        if self.round_to is not None and not self.structured:
            raise ValueError("round_to: counts channels, so it needs structured: true")
        return self

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, name: str) -> str:
        from .structured import IMPORTANCES  # the pruner imports this module: look it up on use

        IMPORTANCES.get(name)  # an unknown name fails when the options load, listing the known ones
        return name


class SharingSpec(BaseModel):
    """Weight sharing after pruning (Deep Compression's second step, :func:`distiq.prune.share_weights`):
    off unless ``share_bits`` is set; the centroids are fine-tuned as the pruned weights were."""

    model_config = ConfigDict(extra="forbid")

    share_bits: int | None = Field(
        None, ge=1, le=8, description="Codebook index bits per layer (2**bits centroids); None: no sharing."
    )
    share_conv_bits: int | None = Field(
        None, ge=1, le=8, description="Index bits of conv layers (Deep Compression: 8); None: share_bits."
    )
    share_init: Literal["linear", "density"] = Field("linear", description="Centroid initialisation.")
    share_biases: bool = Field(False, description="Share each layer's bias too (its own codebook).")

    def sharing_options(self) -> dict:
        """Keyword arguments of :func:`distiq.prune.share_weights` (without data and training)."""
        return {
            "bits": self.share_bits,
            "conv_bits": self.share_conv_bits,
            "init": self.share_init,
            "biases": self.share_biases,
        }
