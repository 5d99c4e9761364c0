"""The distill stage's options, declared once: the recipe's ``distill:`` section (which adds its
``train:`` options) and the options of ``distiq distill`` are this model; ``dq.distill`` takes the same
names as keywords with the same defaults."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .logits import LOGIT_LOSSES


class DistillSpec(BaseModel):
    """Which student, and how it learns from the teacher."""

    model_config = ConfigDict(extra="forbid")

    student: str = Field("vgg-small", description="Student: registered model name or package.module:factory.")
    student_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the student."
    )
    loss: str = Field("kd", description="Logit loss: kd, mse, hard-kd, dkd (or a registered one).")
    temperature: float = Field(4.0, gt=0, description="Softening temperature.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the distillation term (1-alpha: CE).")
    loss_options: dict[str, Any] = Field(default_factory=dict, description="Extra options of the logit loss.")
    features: list[dict[str, Any]] = Field(
        default_factory=list, description="Feature terms: {kind, student, teacher, weight}."
    )
    offline: bool | None = Field(
        None,
        description="Compute the teacher's logits once and reuse them; default: offline unless feature "
        "terms need the teacher online.",
    )
    init_from_teacher: bool = Field(
        False, description="Copy matching teacher weights into the student first."
    )
    freeze: list[str] = Field(default_factory=list, description="Student layers not to train.")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        LOGIT_LOSSES.get(name)  # fail when the options load, not after the teacher has trained
        return name


def resolve_offline(offline: bool | None, features: list | tuple) -> bool:
    """``offline`` as given, or (``None``) offline exactly when no feature term needs the teacher."""
    return not features if offline is None else offline


def objective_options(spec: DistillSpec) -> dict[str, Any]:
    """The keywords of :func:`distiq.distill` that ``spec`` sets (all but which student to build)."""
    return spec.model_dump(include=set(DistillSpec.model_fields) - {"student", "student_options"})
