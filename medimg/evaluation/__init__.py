"""Metrics and per-case predictions for evaluated sets."""
