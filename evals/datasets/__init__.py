"""Deterministic datasets the shipped suites (and the demo loop) are built from.

See support_desk (the demo's support desk) and builtin (one small dataset per task type).
"""
