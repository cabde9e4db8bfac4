"""Exported diagnostic models: TorchScript packaging, model cards and parity checks."""
