"""Synthetic img2dataset-format demo data with injected, known defects."""

from pipeline.demo.generate import make_demo_data

__all__ = ["make_demo_data"]
