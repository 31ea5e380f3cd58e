"""Deterministic datasets the shipped suites (and the demo loop) are built from; see support_desk and builtin."""
