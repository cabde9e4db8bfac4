"""LightningModules, one per kind of study; the network is built elsewhere and injected."""

from medimg.tasks.classification import ClassificationTask
from medimg.tasks.regression import RegressionTask
from medimg.tasks.segmentation import SegmentationTask

__all__ = ["ClassificationTask", "RegressionTask", "SegmentationTask"]
