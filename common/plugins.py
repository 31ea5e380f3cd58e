"""The plug-in registry: pluggable kinds (eval metrics, scorers, drift detectors, ...) registered by name
and built from config, written once.

```python
SCORERS: PluginRegistry[Scorer] = PluginRegistry("scorer kind", error=ScorerConfigError)

@SCORERS.register("reference")
class ReferenceScorer(Scorer): ...

SCORERS.kinds()                                # ['reference', ...]
SCORERS.kinds(where=lambda cls: cls.cheap)     # only the classes a predicate accepts
SCORERS.get("refrence")                        # ScorerConfigError: ... (did you mean ...)
SCORERS.build("reference", {"sample_rate": 1}) # options checked against the constructor's signature
```

Two kinds of error: a problem in config (an unknown kind, an option the constructor does not take, a
constructor's `TypeError`/`ValueError`) is raised as the family's own error (`error=`), so callers keep
catching what they caught; registering a second class under a taken kind is a programming error raised
at import time as `PluginRegistrationError` (a `ValueError`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from common.settings import did_you_mean

__all__ = ["PluginRegistrationError", "PluginRegistry"]

T = TypeVar("T")
C = TypeVar("C", bound=type)

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class PluginRegistrationError(ValueError):
    """A class was registered under a kind that is already taken (a programming error, not a config one)."""


class PluginRegistry(Generic[T]):
    """Classes of one plug-in family by kind name.

    `family` names the family in messages (`unknown <family> 'x'`); config errors are raised as
    `error(message)`; `register` stores the kind on the class as `kind_attr` (None: not at all).
    """

    def __init__(
        self, family: str, *, error: Callable[[str], Exception] = ValueError, kind_attr: str | None = "kind"
    ) -> None:
        self.family = family
        self._error = error
        self._kind_attr = kind_attr
        self._classes: dict[str, type[T]] = {}

    def register(self, kind: str) -> Callable[[C], C]:
        """Class decorator: register the class under `kind` (and set its `kind_attr` attribute to `kind`).
        A kind is registered once: a second registration, even of the same class, raises
        `PluginRegistrationError`."""

        def decorate(cls: C) -> C:
            existing = self._classes.get(kind)
            if existing is not None:
                raise PluginRegistrationError(
                    f"{self.family} {kind!r} is already registered by {existing.__name__}"
                )
            if self._kind_attr is not None:
                setattr(cls, self._kind_attr, kind)
            self._classes[kind] = cls
            return cls

        return decorate

    def kinds(self, where: Callable[[type[T]], bool] | None = None) -> list[str]:
        """Every registered kind (or those whose class `where` accepts), sorted."""
        return sorted(k for k, cls in self._classes.items() if where is None or where(cls))

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
        allowed = {n for n, p in params.items() if n != "self" and p.kind in _KEYWORD_KINDS}
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
