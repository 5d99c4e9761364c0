"""The recipe: one YAML file describing the chain teacher -> distill -> prune -> quantize -> report.

Validated with pydantic when loaded: an unknown key, a wrong type or a missing file produces one
message that names the key's path (``distill.train.epochs: ...``) and what was expected, before any
work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from distiq.distill.spec import DistillSpec
from distiq.engine.config import TrainSpec
from distiq.errors import DistiqError, validation_message
from distiq.io import read_yaml_mapping
from distiq.plugins import load_plugins
from distiq.prune.spec import PruneSpec, SharingSpec
from distiq.quant.observers import OBSERVERS
from distiq.quant.spec import QuantizeSpec


class Strict(BaseModel):
    """Base: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    """Which data, how much of it, and how it is split."""

    name: str = "fashion-mnist"
    root: str | None = None
    fallback: str | None = Field("digits", description="Dataset used when `name` is not installed.")
    subsample: float | None = Field(None, gt=0, description="Training samples kept (count or fraction).")
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Fraction held out (stratified, by `seed`) as the test split when the data has none "
        "(an .npz file or an image folder); unused for datasets with their own test split.",
    )
    seed: int = 0


class TeacherSpec(Strict):
    """Train a teacher (``model`` + ``train``) or load one (``weights``)."""

    model: str = "vgg-small"
    model_options: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None
    train: TrainSpec = Field(default_factory=TrainSpec)

    @model_validator(mode="after")
    def _weights_exist(self) -> TeacherSpec:
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"weights file not found: {self.weights}")
        return self


class DistillStageSpec(DistillSpec):
    """The recipe's ``distill:`` section: the student and objective
    (:class:`~distiq.distill.spec.DistillSpec`) and how it trains."""

    train: TrainSpec = Field(default_factory=TrainSpec)


class PruneStageSpec(PruneSpec, SharingSpec):
    """The recipe's ``prune:`` section: what to remove (:class:`~distiq.prune.spec.PruneSpec`), then a
    fine-tune of the pruned student (optionally distilling from the teacher), then optionally weight
    sharing with the same fine-tune of its centroids (:class:`~distiq.prune.spec.SharingSpec`)."""

    distill_from_teacher: bool = Field(True, description="Fine-tune with KD from the teacher.")
    fine_tune: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=2, lr=1e-3))


class CalibrationSample(Strict):
    """How many training images calibrate (the recipe's quantize stage and ``distiq quantize``)."""

    calib_samples: int = Field(512, ge=1, description="Calibration samples (stratified, training split).")


class QuantizeStageSpec(QuantizeSpec, CalibrationSample):
    """The recipe's ``quantize:`` section: how to quantize (:class:`~distiq.quant.spec.QuantizeSpec`)
    plus what the stage calibrates on and measures."""

    sensitivity: bool = Field(True, description="Rank layers by the accuracy drop of each alone.")
    calib_repeats: int = Field(3, ge=0, description="Calibration subsets for the calibration-set spread.")
    budget: float | None = Field(
        None,
        ge=0,
        description="Mixed precision: keep sensitive layers float until the drop <= this, "
        "tuned on the validation split (never the test split).",
    )


class SubsampleSpec(Strict):
    """Repeated stratified subsamples of the test split: how much a stage's accuracy moves by the draw."""

    repeats: int = Field(10, ge=2, description="Subsamples drawn (seeds seed, seed+1, ...).")
    fraction: float = Field(0.5, gt=0, lt=1, description="Share of the test split in each subsample.")


class KFoldSpec(Strict):
    """The test split cut into ``k`` stratified folds, each stage scored on every fold."""

    k: int = Field(5, ge=2, description="Number of folds.")


class SplitsSpec(Strict):
    """Accuracy as mean, std and 95% interval over several cuts of the data (each part optional)."""

    subsample: SubsampleSpec | None = None
    kfold: KFoldSpec | None = None
    ratios: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=list,
        description="Shares of the training (transfer) data the distill stage is re-run on, the student "
        "then scored on the test split; needs a distill: section.",
    )


class AttributionSpec(Strict):
    """Whether each later stage looks at the same pixels as the teacher (Captum attribution maps)."""

    samples: int = Field(32, ge=1, description="Test images (a stratified draw, the same for every stage).")
    method: Literal["integrated-gradients", "saliency"] = "integrated-gradients"
    steps: int = Field(32, ge=1, description="Integration steps of integrated gradients.")


class EvaluateSpec(Strict):
    """What to measure on the test split for every stage."""

    latency: bool = True
    robustness: bool = True
    robustness_samples: int | None = Field(
        None,
        ge=1,
        description="Test images (a stratified draw, the same for every stage) that robustness corrupts; "
        "None: all. Each corruption and severity is a pass over them, the costliest measurement.",
    )
    bootstrap: int = Field(200, ge=0, description="Bootstrap resamples for the accuracy CI (0: none).")
    threads: int = Field(2, ge=1)
    splits: SplitsSpec | None = Field(None, description="Interval estimates over data cuts; None: off.")
    attribution: AttributionSpec | None = Field(None, description="Attribution agreement; None: off.")


def _calibrator(name: str) -> str:
    """A registered calibrator's name (checked per list entry, so the message names the entry)."""
    OBSERVERS.get(name)
    return name


class SearchSpace(Strict):
    """Candidates the budget search tries: every combination of the lists (each needs a value)."""

    methods: list[Annotated[str, AfterValidator(_calibrator)]] = Field(
        default_factory=lambda: ["minmax", "percentile", "kl"],
        min_length=1,
        description="Calibrators to try (registered names, a plugin's among them).",
    )
    bits: list[Annotated[int, Field(ge=2, le=8)]] = Field(default_factory=lambda: [8], min_length=1)
    per_channel: list[bool] = Field(default_factory=lambda: [True], min_length=1)
    rounding: list[Literal["nearest", "adaround"]] = Field(
        default_factory=lambda: ["nearest"],
        min_length=1,
        description="Weight roundings to try (adaround: learned per layer, minutes per trial).",
    )
    prune_amounts: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=list, description="Extra prune amounts to try; empty means no pruning (amount 0)."
    )
    float_fallback: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1, description="Most sensitive layers kept in float."
    )


class BudgetSpec(Strict):
    """Largest acceptable accuracy drop against the teacher, and what to minimise within it."""

    max_accuracy_drop: float = Field(1.0, ge=0)
    relative: bool = Field(False, description="Drop in percent of the teacher's accuracy, not points.")
    objective: Literal["size", "latency"] = "size"
    search: SearchSpace = Field(default_factory=SearchSpace)
    workers: int = Field(
        1,
        ge=1,
        description="Processes judging candidates at once (one thread each); results as with 1.",
    )


class MlflowSpec(Strict):
    """Where a run is logged in MLflow (:mod:`distiq.tracking`)."""

    uri: str | None = Field(
        None,
        description="Tracking URI (http://..., file:...); None: a local file store, mlruns/ beside the run.",
    )
    experiment: str = Field("distiq", description="MLflow experiment the run is logged under.")


class TrackingSpec(Strict):
    """Experiment tracking of a finished run: its recipe, per-epoch and stage metrics, files."""

    mlflow: MlflowSpec | None = None


class Recipe(Strict):
    """A whole run. Stages left out (``null``) are skipped; ``teacher`` and ``data`` are required."""

    name: str = Field("run", description="The run's folder under runs/ (a relative path, no '..').")
    seed: int = 0
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: TeacherSpec
    distill: DistillStageSpec | None = None
    prune: PruneStageSpec | None = None
    quantize: QuantizeStageSpec | None = None
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    budget: BudgetSpec | None = None
    report: bool = True
    tracking: TrackingSpec | None = None
    plugins: list[str] = Field(
        default_factory=list,
        description="The user's files (path/to/file.py, relative to the recipe) or modules to import first, "
        "so the names they register (dq.register) can be used here.",
    )
    _source: str = PrivateAttr("recipe")  # the file it came from, for the messages of later checks

    @field_validator("name")
    @classmethod
    def _name_stays_in_runs(cls, name: str) -> str:
        """``runs/<name>`` must be inside ``runs``: an absolute name or one with ``..`` would write
        wherever it points."""
        path = Path(name)
        if not name.strip() or path.is_absolute() or ".." in path.parts or name[0] == "~" or "\0" in name:
            raise ValueError("expected a folder name inside runs/ (relative, without '..')")
        return name


def load_recipe(recipe: str | os.PathLike[str] | dict | Recipe) -> Recipe:
    """Validate a recipe given as a YAML path, a dict or a :class:`Recipe`.

    Raises:
        DistiqError: The file is missing or not YAML, a key is unknown, mistyped or missing, or a name
            (model, loss, calibrator, feature spec, search list) is unknown; the message names the
            file and each key's path.
    """
    if isinstance(recipe, Recipe):
        return recipe
    source, base_dir = "recipe", Path.cwd()
    if not isinstance(recipe, dict):
        source, base_dir = str(recipe), Path(recipe).parent
        recipe = read_yaml_mapping(recipe, "recipe")
    plugins = recipe.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise DistiqError(f"{source}: plugins: expected a list of file paths or module names")
    load_plugins(plugins, base_dir)  # before validation: the names they register are checked below
    try:
        loaded = Recipe.model_validate(recipe)
    except ValidationError as e:
        raise DistiqError(validation_message(e, source)) from None
    from .validate import check_names  # validate builds on this module's specs

    loaded._source = source
    check_names(loaded, source)  # layers are checked against the built models once the data is loaded
    return loaded
