"""The plug-in registry: pluggable kinds (eval metrics, scorers, drift detectors, ...) registered by name
and built from config, written once.

```python
SCORERS: PluginRegistry[Scorer] = PluginRegistry("scorer", error=ScorerConfigError)

@SCORERS.register("reference")
class ReferenceScorer(Scorer): ...

SCORERS.kinds()                                # ['reference', ...]
SCORERS.get("refrence")                        # ScorerConfigError: ... (did you mean ...)
SCORERS.build("reference", {"sample_rate": 1}) # options checked against the constructor's signature
```
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from common.settings import did_you_mean

__all__ = ["PluginRegistry"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


class PluginRegistry(Generic[T]):
    """Classes of one plug-in family by kind name; errors are raised as `error(message)`."""

    def __init__(
        self, family: str, *, error: Callable[[str], Exception] = ValueError, kind_attr: str | None = "kind"
    ) -> None:
        self.family = family
        self._error = error
        self._kind_attr = kind_attr
        self._classes: dict[str, type[T]] = {}

    def register(self, kind: str) -> Callable[[C], C]:
        """Class decorator: register the class under `kind` (and set its `kind` attribute). Registering
        another class under a taken name is an error; re-registering the same class is a no-op."""

        def decorate(cls: C) -> C:
            existing = self._classes.get(kind)
            if existing is not None and existing is not cls:
                raise self._error(f"{self.family} kind {kind!r} is already registered by {existing.__name__}")
            if self._kind_attr is not None:
                setattr(cls, self._kind_attr, kind)
            self._classes[kind] = cls
            return cls

        return decorate

    def kinds(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._classes)

    def __contains__(self, kind: object) -> bool:
        return kind in self._classes

    def items(self) -> list[tuple[str, type[T]]]:
        """`(kind, class)` pairs, sorted by kind."""
        return sorted(self._classes.items())

    def get(self, kind: str) -> type[T]:
        """The class registered under `kind`; an unknown kind names the close match and the known ones."""
        try:
            return self._classes[kind]
        except KeyError:
            raise self._error(
                f"unknown {self.family} {kind!r}{did_you_mean(kind, self.kinds())}; "
                f"known: {', '.join(self.kinds()) or 'none'}"
            ) from None

    def allowed_options(self, kind: str) -> tuple[set[str], bool]:
        """Keyword options the class's constructor takes, and whether it also takes `**kwargs`."""
        params = inspect.signature(self.get(kind).__init__).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        allowed = {
            n
            for n, p in params.items()
            if n != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        return allowed, accepts_any

    def check_options(self, kind: str, options: Mapping[str, Any]) -> None:
        """Refuse an option the constructor does not take (with a hint and the allowed ones)."""
        allowed, accepts_any = self.allowed_options(kind)
        if accepts_any:
            return
        for name in sorted(set(options) - allowed):
            raise self._error(
                f"{self.family} {kind!r}: unknown option {name!r}{did_you_mean(name, sorted(allowed))} "
                f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
            )

    def build(self, kind: str, options: Mapping[str, Any] | None = None) -> T:
        """An instance of `kind` built from keyword `options` (checked first); a constructor's
        `TypeError`/`ValueError` becomes the family's error."""
        opts = dict(options or {})
        self.check_options(kind, opts)
        try:
            return self.get(kind)(**opts)
        except (TypeError, ValueError) as exc:
            raise self._error(f"{self.family} {kind!r}: {exc}") from exc
