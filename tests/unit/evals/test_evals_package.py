"""The `evals` package root: every lazily exported name resolves, and none is shadowed by a submodule."""

from __future__ import annotations

import importlib
import pkgutil
import types

import evals


def test_every_export_resolves_to_the_named_object_even_after_all_submodules_loaded() -> None:
    # Importing a submodule sets a package attribute of the same name; an export named like a
    # submodule (e.g. `gate` in evals/gate.py) would then silently become the module.
    for info in pkgutil.walk_packages(evals.__path__, "evals."):
        importlib.import_module(info.name)
    for name in evals.__all__:
        value = getattr(evals, name)
        assert not isinstance(value, types.ModuleType), f"evals.{name} is a module, not the exported object"
        assert getattr(value, "__name__", name) == name
