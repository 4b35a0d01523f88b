"""Output-side pieces of the export stage (pipeline.stages.export): shard layout and the manifest."""
