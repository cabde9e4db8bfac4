"""Evaluation: metrics with patient-bootstrap intervals, calibration, subgroups, reports.

Pipeline entry: :func:`medimg.evaluation.assemble.evaluate_predictions` (each set's
``predict_step`` outputs and manifest rows → ``<run>/eval/<set>/`` with ``predictions.csv``,
``metrics.json``, ``report.html`` and figures, plus ``results.json``);
:func:`medimg.evaluation.collect.evaluate_datamodule` predicts a datamodule's sets first, and
:func:`medimg.evaluation.exported.predict_exported` runs an exported model file instead.

Library: :func:`medimg.evaluation.sets.evaluate_sets` (per-case tables → JSON-able results),
:func:`medimg.evaluation.outputs.write_set_outputs` (``metrics.json``, figures and a
self-contained ``report.html`` per set), :func:`medimg.evaluation.tracker.to_tracker`.
Per-case tables come from :func:`medimg.evaluation.predict.summarise` (and, for segmentation,
:func:`medimg.evaluation.segmentation.case_table`) with :func:`~medimg.evaluation.predict.
attach_manifest` adding patients and attributes; the dataset audit is
:func:`medimg.evaluation.subgroups.audit_table`.
"""
