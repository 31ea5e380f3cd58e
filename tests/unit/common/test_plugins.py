"""`common.plugins.PluginRegistry` on its own: registration, lookup with hints, option checking, building."""

from __future__ import annotations

from typing import ClassVar

import pytest

from common.plugins import PluginRegistrationError, PluginRegistry


class FamilyError(Exception):
    """The family's own config error."""


class Widget:
    kind: ClassVar[str]
    size_class: ClassVar[str] = "small"

    def __init__(self, *, colour: str = "red", width: int = 1) -> None:
        if width < 1:
            raise ValueError("width must be at least 1")
        self.colour = colour
        self.width = width


def make_registry() -> PluginRegistry[Widget]:
    widgets: PluginRegistry[Widget] = PluginRegistry("widget", error=FamilyError)

    @widgets.register("round")
    class Round(Widget):
        pass

    @widgets.register("square")
    class Square(Widget):
        size_class = "large"

    @widgets.register("loose")
    class Loose(Widget):
        def __init__(self, **options: object) -> None:
            super().__init__()
            self.options = options

    return widgets


def test_register_sets_the_kind_and_lists_kinds() -> None:
    widgets = make_registry()
    assert widgets.kinds() == ["loose", "round", "square"]
    assert widgets.kinds(where=lambda cls: cls.size_class == "large") == ["square"]
    assert "round" in widgets and "oval" not in widgets
    round_cls = widgets.get("round")
    assert round_cls.kind == "round" and round_cls.__name__ == "Round"
    assert [k for k, _ in widgets.items()] == ["loose", "round", "square"]


def test_kind_attr_names_the_attribute_or_none() -> None:
    named: PluginRegistry[object] = PluginRegistry("detector", kind_attr="name")

    @named.register("mmd")
    class Mmd:
        name: ClassVar[str]

    assert Mmd.name == "mmd" and not hasattr(Mmd, "kind")

    bare: PluginRegistry[object] = PluginRegistry("thing", kind_attr=None)

    @bare.register("x")
    class Thing:
        pass

    assert not hasattr(Thing, "kind") and bare.get("x") is Thing


def test_a_taken_kind_is_refused_even_for_the_same_class() -> None:
    widgets = make_registry()
    square = widgets.get("square")

    class Other(Widget):
        pass

    with pytest.raises(PluginRegistrationError, match="widget 'square' is already registered by Square"):
        widgets.register("square")(Other)
    with pytest.raises(ValueError, match="already registered"):
        widgets.register("square")(square)
    assert widgets.get("square") is square


def test_unknown_kind_names_a_close_match_and_the_known_ones() -> None:
    widgets = make_registry()
    with pytest.raises(
        FamilyError, match=r"unknown widget 'sqare' \(did you mean 'square'\?\); known: loose, round"
    ):
        widgets.get("sqare")
    with pytest.raises(FamilyError, match="unknown widget 'zzz'; known: loose, round, square"):
        widgets.build("zzz")
    empty: PluginRegistry[Widget] = PluginRegistry("widget")
    with pytest.raises(ValueError, match="known: none"):
        empty.get("round")


def test_options_are_checked_against_the_constructor() -> None:
    widgets = make_registry()
    assert widgets.allowed_options("round") == ({"colour", "width"}, False)
    built = widgets.build("round", {"colour": "blue", "width": 3})
    assert isinstance(built, Widget) and (built.colour, built.width) == ("blue", 3)
    with pytest.raises(
        FamilyError,
        match=r"widget 'round': unknown option 'color' \(did you mean 'colour'\?\) "
        r"\(allowed: colour, width\)",
    ):
        widgets.build("round", {"color": "blue"})
    loose = widgets.build("loose", {"anything": 1})  # **kwargs takes every option
    assert vars(loose)["options"] == {"anything": 1}


def test_constructor_errors_become_the_family_error() -> None:
    widgets = make_registry()
    with pytest.raises(FamilyError, match="widget 'round': width must be at least 1") as info:
        widgets.build("round", {"width": 0})
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(FamilyError, match="widget 'round': "):
        widgets.build("round", {"width": "wide"})  # TypeError from the comparison
