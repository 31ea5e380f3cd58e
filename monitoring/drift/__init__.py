"""Drift detection: input drift on prompt embeddings (MMD, classifier test, cluster shifts) and
output-quality drift on score streams (ADWIN, Page-Hinkley), with typed `DriftReport`s.

Importing this package registers the built-in detectors: mmd, classifier (input); adwin, page_hinkley
(quality), in the registry `DETECTORS`. Add one with `@register_detector("name")`.
"""

from monitoring.drift import classifier, mmd, quality  # noqa: F401  (registers detectors)
from monitoring.drift.base import (
    DETECTORS,
    ClusterShift,
    DriftDetector,
    DriftKind,
    DriftReport,
    InputDriftDetector,
    QualityDriftDetector,
    ScoreStream,
    build_detector,
    detector_names,
    get_detector_class,
    register_detector,
)
from monitoring.drift.checks import (
    check_input_drift,
    check_input_drift_from_log,
    check_quality_drift,
    check_quality_drift_from_log,
    input_detector,
    quality_detector,
)
from monitoring.drift.classifier import ClassifierDetector
from monitoring.drift.clusters import cluster_shift
from monitoring.drift.mmd import MMDDetector, mmd_permutation_test
from monitoring.drift.quality import ADWINDetector, PageHinkleyDetector

__all__ = [
    "DETECTORS",
    "ADWINDetector",
    "ClassifierDetector",
    "ClusterShift",
    "DriftDetector",
    "DriftKind",
    "DriftReport",
    "InputDriftDetector",
    "MMDDetector",
    "PageHinkleyDetector",
    "QualityDriftDetector",
    "ScoreStream",
    "build_detector",
    "check_input_drift",
    "check_input_drift_from_log",
    "check_quality_drift",
    "check_quality_drift_from_log",
    "cluster_shift",
    "detector_names",
    "get_detector_class",
    "input_detector",
    "mmd_permutation_test",
    "quality_detector",
    "register_detector",
]
