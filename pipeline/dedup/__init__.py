"""Duplicate finding shared by the dedup, decontamination and containment code: perceptual-hash
pairs by banding (`phash`), SemDeDup within a cluster (`semdedup`), nearest reference vectors in
Spark tasks (`nearest`), evaluation-set reading (`eval_sets`)."""
