"""Embedding work shared by the stages: per-shard encoding tasks (`shards`) and the import of
precomputed clip-retrieval embeddings (`precomputed`)."""
