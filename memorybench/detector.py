"""Old import path, kept for published plugins: the code lives in :mod:`memorybench.api.detector`."""

from memorybench.api.detector import (
    DETECTORS,
    DetectionScores,
    Detector,
    check_detector_class,
    register_detector,
)
from memorybench.model.hooks import installed_processors as capture_processors
from memorybench.model.sampling import seed_range as seed_list
from memorybench.model.trajectory import StepRecord, clean_estimate, early_trajectory, per_prompt

__all__ = ["DETECTORS", "DetectionScores", "Detector", "check_detector_class", "register_detector", "capture_processors", "StepRecord", "clean_estimate", "early_trajectory", "per_prompt",
           "seed_list"]
