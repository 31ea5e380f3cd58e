"""tuneloop: serve LLMs with hot-swappable LoRA adapters, evaluate them, retrain them when quality drifts.

This package is the composition root: settings, the CLI and the `demo` main job. The work is done by
the top-level packages `serving`, `training`, `evals` and `monitoring`.
"""

__version__ = "0.1.0"
