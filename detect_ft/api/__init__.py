"""The Python API: :class:`Detector` (load or create, train, predict, evaluate, export) and its results.

The command line calls it; see :mod:`detect_ft.api.detector` for an example.
"""

from detect_ft.api.detector import Detector
from detect_ft.api.train import TrainRun
from detect_ft.inference.results import Result

__all__ = ["Detector", "Result", "TrainRun"]
