"""The pipeline's machinery: the doit tasks made from the stage declarations, fingerprints,
doit's state, the run lock, pipeline.lock.json, and what status/plan/dag and a run say."""
