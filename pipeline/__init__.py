"""Curation pipeline for web-scale image-text datasets."""

__version__ = "0.1.0"
