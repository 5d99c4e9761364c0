"""What to prune, declared once: the recipe's ``prune:`` section (which adds its fine-tuning) and the
options of ``distiq prune`` are this model; ``dq.prune`` and the structured pruner take the same names
with the same defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, name: str) -> str:
        from .structured import IMPORTANCES  # the pruner imports this module: look it up on use

        IMPORTANCES.get(name)  # an unknown name fails when the options load, listing the known ones
        return name
