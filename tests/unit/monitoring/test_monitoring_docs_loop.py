"""docs/loop.md stays true: its field reference is the one rendered from the models, and every spec in
it validates (the files a spec names are created empty first: validation checks they exist)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from monitoring.spec import load_spec
from monitoring.spec_reference import BEGIN, END, reference_markdown

DOC = Path(__file__).resolve().parents[3] / "docs" / "loop.md"


def test_the_reference_block_is_the_generated_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert block == reference_markdown(), "run: python -m monitoring.spec_reference, paste into docs/loop.md"


def _yaml_specs() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [b for b in blocks if re.search(r"^adapter:", b, flags=re.M)]


@pytest.mark.parametrize("index", range(len(_yaml_specs())))
def test_every_spec_in_the_doc_validates(index: int, tmp_path: Path) -> None:
    text = _yaml_specs()[index]
    raw = yaml.safe_load(text)
    for ref in [*(raw.get("suites") or {}).values(), (raw.get("recipe") or {}).get("training")]:
        if isinstance(ref, str) and ref.startswith("./"):
            (tmp_path / ref).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / ref).write_text("{}\n")
    spec_file = tmp_path / "loop.yaml"
    spec_file.write_text(text, encoding="utf-8")
    assert load_spec(spec_file).adapter == raw["adapter"]


def test_the_doc_shows_at_least_a_minimal_and_a_complete_spec() -> None:
    assert len(_yaml_specs()) >= 2
