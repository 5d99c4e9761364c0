"""Knowledge distillation: logit and feature losses, schemes, online and offline teachers."""

from . import functional
from .api import distill
from .concept import ConceptKDLoss, concept_kd, concept_probabilities, distill_concepts
from .features import AttentionTerm, HintTerm, MergeTerm
from .logits import LOGIT_LOSSES, make_logit_loss
from .objective import DistillObjective, FeatureSpec
from .offline import teacher_logits
from .schemes import freeze_, init_from_teacher_

__all__ = [
    "ConceptKDLoss",
    "concept_kd",
    "concept_probabilities",
    "distill_concepts",
    "LOGIT_LOSSES",
    "AttentionTerm",
    "DistillObjective",
    "FeatureSpec",
    "HintTerm",
    "MergeTerm",
    "distill",
    "freeze_",
    "functional",
    "init_from_teacher_",
    "make_logit_loss",
    "teacher_logits",
]
