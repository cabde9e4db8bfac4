"""Data loading, preprocessing and synthetic dataset generation."""
