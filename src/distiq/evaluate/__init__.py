"""Evaluation: metrics, calibration, robustness, latency, cost, attribution agreement, and honest
estimates of noise."""

from .api import (
    LOGIT_METRICS,
    EvaluationReport,
    evaluate,
    evaluate_full,
    logits_fn,
    model_logits,
    onnx_logits,
)
from .attribution import StageAgreement, agreement, attribution_agreement, attribution_maps, spearman
from .calibration import CalibrationBins, calibration_bins, expected_calibration_error
from .compare import (
    ClassChange,
    Comparison,
    Flips,
    compare,
    compare_predictions,
    per_class_degradation,
    prediction_flips,
)
from .complexity import Complexity, count_macs, count_parameters, file_size, model_complexity, onnx_complexity
from .fit import check_fits
from .latency import LatencyResult, measure_latency
from .metrics import METRICS, confusion_matrix, per_class_accuracy, per_class_f1
from .robustness import CORRUPTIONS, RobustnessResult, corrupt, robustness
from .splits import (
    SplitEstimate,
    cross_validate,
    data_ratios,
    kfold_scores,
    ratios_table,
    repeated_subsampling,
    subsample_scores,
)
from .stats import BootstrapInterval, McNemarResult, Spread, bootstrap_ci, mcnemar, spread, t_interval

__all__ = [
    "CORRUPTIONS",
    "LOGIT_METRICS",
    "METRICS",
    "BootstrapInterval",
    "CalibrationBins",
    "ClassChange",
    "Comparison",
    "Complexity",
    "EvaluationReport",
    "Flips",
    "LatencyResult",
    "McNemarResult",
    "RobustnessResult",
    "SplitEstimate",
    "Spread",
    "StageAgreement",
    "agreement",
    "attribution_agreement",
    "attribution_maps",
    "bootstrap_ci",
    "calibration_bins",
    "check_fits",
    "compare",
    "compare_predictions",
    "confusion_matrix",
    "corrupt",
    "count_macs",
    "count_parameters",
    "cross_validate",
    "data_ratios",
    "evaluate",
    "evaluate_full",
    "expected_calibration_error",
    "file_size",
    "kfold_scores",
    "logits_fn",
    "mcnemar",
    "measure_latency",
    "model_complexity",
    "model_logits",
    "onnx_complexity",
    "onnx_logits",
    "per_class_accuracy",
    "per_class_degradation",
    "per_class_f1",
    "prediction_flips",
    "ratios_table",
    "repeated_subsampling",
    "robustness",
    "spearman",
    "spread",
    "subsample_scores",
    "t_interval",
]
