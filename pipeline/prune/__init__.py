"""Choosing which samples to keep: quota allocation (numpy), keep-count resolution and the Spark
selection helpers shared by the pruning and filtering steps."""
