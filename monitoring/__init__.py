"""monitoring: watches served traffic and decides when to retrain.

Building blocks (the loop controller in `monitoring.loop` composes them):

* `monitoring.scorers` - scorers registered by name (feedback, reference, heuristics, llm_judge) and
  `score_batch(db_url, since=..., scorers=[...]) -> ScoreSummary` over the shared request log;
* `monitoring.embeddings` - all-MiniLM-L6-v2 sentence embeddings (bundled, offline, cached per process);
* `monitoring.drift` - input drift (MMD / classifier two-sample tests, cluster shifts) and quality drift
  (ADWIN / Page-Hinkley on score streams), reported as JSON-serialisable `DriftReport`s;
* `monitoring.policy` - the YAML trigger policy and the pure `decide(policy, state, reports, now)`;
* `monitoring.metrics` - Prometheus metrics of the loop (`LoopMetrics`, own registry);
* `monitoring.store` - monitoring's SQLAlchemy Core view of the `requests`/`feedback`/`scores` tables.

Submodules are imported explicitly (this package imports nothing heavy on its own).
"""
