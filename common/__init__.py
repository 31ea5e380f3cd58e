"""tuneloop's floor: the facts every package shares, written once.

* `common.home` - the local state folder (`$TUNELOOP_HOME`);
* `common.db` - engines for SQLite/Postgres, UTC timestamps, additive schema evolution;
* `common.log_schema` - the request-log tables (`requests`, `feedback`, `scores`) and their row types;
* `common.settings` - the settings base: load a YAML file with paths relative to it, dotted overrides,
  every error at once with its field path and a "did you mean";
* `common.plugins` - the generic registry of pluggable kinds (metrics, scorers, drift detectors).

It imports nothing of ours; `serving`, `training`, `evals`, `monitoring` and `tuneloop` import it.
"""
