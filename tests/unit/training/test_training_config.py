"""Config validation: unknown keys, impossible values and style rules fail with the key named; YAML loading,
relative paths and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainingConfig, load_config, parse_config
from training.errors import ConfigError

MINIMAL = {"name": "x", "data": {"sources": [{"path": "d.jsonl"}]}}


def test_minimal_config_has_small_defaults() -> None:
    config = parse_config(MINIMAL, root=Path("/data"))
    assert config.lora.r == 16 and config.lora.lora_alpha == 32
    assert config.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert config.data.max_seq_length == 256
    assert config.train.batching == "packed"
    assert config.data.sources[0].kind == "file"  # kind defaults to file
    assert config.data.sources[0].path == Path("/data/d.jsonl")  # relative to the config's folder


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"lora": {"r": 0}}, "lora.r"),
        ({"lora": {"r": -4}}, "lora.r"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate"),
        ({"train": {"batching": "magic"}}, "train.batching"),
        ({"data": {"sources": []}}, "data.sources"),
        (
            {"data": {"sources": [{"path": "d.jsonl"}], "split": {"validation": 0.5, "test": 0.45}}},
            "data.split",
        ),
        ({"quantization": "int3"}, "quantization"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_impossible_values_name_the_key(patch: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **patch})
    assert needle in str(info.value)


def test_unknown_key_is_an_error_with_a_hint() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "lora": {"rank": 8}})
    message = str(info.value)
    assert "lora.rank" in message and "unknown key 'rank'" in message
    assert "allowed here" in message and "target_modules" in message


def test_unknown_key_inside_a_source() -> None:
    with pytest.raises(ConfigError, match=r"data\.sources\.0\.colums.*did you mean 'columns'"):
        parse_config({"name": "x", "data": {"sources": [{"path": "d.jsonl", "colums": {}}]}})


def test_unknown_source_kind() -> None:
    with pytest.raises(ConfigError, match="kind must be one of"):
        parse_config({"name": "x", "data": {"sources": [{"kind": "s3", "path": "d"}]}})


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"style": "sequential"}, "needs init_adapter"),
        ({"style": "transfer"}, "needs init_adapter"),
        ({"init_adapter": "/tmp/a"}, "only used by style"),
        ({"style": "multitask"}, "at least two data sources"),
        (
            {
                "train": {"early_stopping_patience": 2},
                "data": {"sources": [{"path": "d.jsonl"}], "split": {"validation": 0}},
            },
            "needs a validation split",
        ),
        (
            {"style": "domain", "data": {"sources": [{"path": "d.jsonl", "template": "chat"}]}},
            "template must be 'text'",
        ),
    ],
)
def test_style_rules(patch: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config({**MINIMAL, **patch})


def test_load_yaml_with_overrides(tmp_path: Path) -> None:
    file = tmp_path / "cfg.yaml"
    file.write_text("name: demo\ndata:\n  sources:\n    - path: data/x.jsonl\ntrain:\n  epochs: 1\n")
    config = load_config(file, {"train.max_steps": 7, "lora.r": 4, "base_model": None})
    assert isinstance(config, TrainingConfig)
    assert config.train.max_steps == 7 and config.lora.r == 4 and config.train.epochs == 1
    assert config.data.sources[0].path == tmp_path / "data" / "x.jsonl"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_shipped_example_configs_validate() -> None:
    configs = sorted((Path(__file__).resolve().parents[3] / "training" / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        continues = "sequential" in path.name or "transfer" in path.name
        overrides = {"init_adapter": "/tmp/parent-adapter"} if continues else {}
        config = load_config(path, overrides)
        header = path.read_text().splitlines()[:6]
        assert any("tuneloop train" in line for line in header), (
            f"{path.name} lacks the command in its header"
        )
        for source in config.data.sources:
            if source.kind == "file":
                assert source.path.is_file(), f"{path.name}: {source.path} missing"


def test_overrides_reach_list_items(tmp_path: Path) -> None:
    file = tmp_path / "cfg.yaml"
    file.write_text(
        "name: demo\ndata:\n  sources:\n    - path: a.jsonl\n    - kind: request_log\n      database_url: x\n"
    )
    config = load_config(file, {"data.sources.1.database_url": "sqlite:///$HOME/db.sqlite"})
    assert config.data.sources[1].database_url == f"sqlite:///{Path.home()}/db.sqlite"
    with pytest.raises(ConfigError, match="no list item 5"):
        load_config(file, {"data.sources.5.path": "b.jsonl"})


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [
        (None, "cuda", True),  # auto: activations dominate GPU memory (benchmarks/results/gpu_qlora_*)
        (None, "cpu", False),  # auto: on CPU recomputation only costs time
        (True, "cpu", True),
        (False, "cuda", False),
    ],
)
def test_gradient_checkpointing_auto_is_on_for_cuda_only(
    setting: bool | None, device: str, expected: bool
) -> None:
    from training.recipes.lora_sft import use_gradient_checkpointing

    raw = dict(MINIMAL) if setting is None else {**MINIMAL, "train": {"gradient_checkpointing": setting}}
    config = parse_config(raw, root=Path("/data"))
    assert config.train.gradient_checkpointing == ("auto" if setting is None else setting)
    assert use_gradient_checkpointing(config, device) is expected


def test_gradient_checkpointing_rejects_other_strings() -> None:
    with pytest.raises(ConfigError, match="train.gradient_checkpointing"):
        parse_config({**MINIMAL, "train": {"gradient_checkpointing": "sometimes"}}, root=Path("/data"))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "name": "x",
                "lora": {"r": 0, "rank": 8},
                "train": {"learning_rate": 0},
                "data": {"sources": [{"path": "d.jsonl"}, {"kind": "request_log", "databse_url": "x"}]},
            }
        )
    error = info.value
    assert error.code == "invalid_config" and str(error).startswith("invalid training config: \n")
    keys = {p.split(":", 1)[0] for p in error.problems}
    assert keys == {
        "lora.r",
        "lora.rank",
        "train.learning_rate",
        "data.sources.1.database_url",
        "data.sources.1.databse_url",
    }, error.problems
    typo = next(p for p in error.problems if p.startswith("data.sources.1.databse_url"))
    assert "did you mean 'database_url'" in typo
    assert "path" not in typo.split("allowed here:")[1]  # the request_log source's keys, not a file's


def test_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    file = folder / "cfg.yaml"
    file.write_text(
        "name: demo\nstyle: sequential\nbase_model: ../models/base\ninit_adapter: adapters/parent\n"
        "data:\n  sources:\n    - kind: hf_dataset\n      path: data/hf\n"
        "output:\n  runs_dir: $RUNS_ROOT/runs\n"
    )
    monkeypatch.setenv("RUNS_ROOT", "out")
    monkeypatch.chdir(tmp_path)
    config = load_config(file)
    assert config.base_model == tmp_path / "models" / "base"
    assert config.init_adapter == folder / "adapters" / "parent"
    assert config.data.sources[0].path == folder / "data" / "hf"
    assert config.output.runs_dir == folder / "out" / "runs"
    # a validated config passed through parse_config keeps its absolute paths
    assert parse_config(config, root=Path("/elsewhere")).base_model == tmp_path / "models" / "base"
    # without a file, relative paths resolve against the current directory
    assert parse_config(MINIMAL).data.sources[0].path == tmp_path / "d.jsonl"


def test_override_errors_are_config_errors(tmp_path: Path) -> None:
    from training.config import apply_overrides

    with pytest.raises(ConfigError, match=r"cannot override 'name\.x': 'name' is not a section"):
        apply_overrides({"name": "n"}, {"name.x": 1})


# ------------------------------------------------------------------------------------ dpo / kto styles

PAIRS = {"name": "x", "data": {"sources": [{"path": "pairs.jsonl"}]}}
LOG = {"kind": "request_log", "database_url": "sqlite:///log.db"}


def test_preference_styles_resolve_batching_and_request_log_records() -> None:
    dpo = parse_config({**PAIRS, "style": "dpo", "data": {"sources": [{"path": "p.jsonl"}, LOG]}})
    assert dpo.train.batching == "padded" and dpo.data.sources[1].records == "preference"
    assert dpo.preference.beta == 0.1 and dpo.preference.loss == "sigmoid"
    kto = parse_config({**PAIRS, "style": "kto", "data": {"sources": [LOG]}})
    assert kto.data.sources[0].records == "kto"
    sft = parse_config({"name": "x", "data": {"sources": [LOG]}})
    assert sft.data.sources[0].records == "sft" and sft.train.batching == "packed"
    # the resolved values survive a round trip (the manifest's config is valid input)
    assert parse_config(dpo.to_plain()).to_plain() == dpo.to_plain()
    # a parent adapter (the champion) is the starting point and the reference model
    assert parse_config({**PAIRS, "style": "kto", "init_adapter": "/a"}).init_adapter == Path("/a")


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"style": "dpo", "train": {"batching": "packed"}}, "batches padded preference records"),
        ({"style": "kto", "train": {"batch_size": 1}}, "batch_size >= 2"),
        ({"style": "kto", "preference": {"loss": "ipo"}}, "preference.loss is a dpo setting"),
        ({"style": "kto", "preference": {"sft_weight": 0.5}}, "sft_weight is a dpo setting"),
        ({"preference": {"beta": 0.5}}, "only used by styles 'dpo' and 'kto'"),
        ({"style": "dpo", "preference": {"beta": 0}}, "preference.beta"),
        ({"style": "dpo", "preference": {"label_smoothing": 0.1}}, "only used by loss 'robust'"),
        ({"style": "dpo", "preference": {"loss": "kto"}}, "preference.loss"),
        ({"style": "dpo", "preference": {"betta": 0.2}}, "did you mean 'beta'"),
        (
            {"style": "dpo", "data": {"sources": [{"path": "p.jsonl", "template": "kto"}]}},
            "template is 'kto'",
        ),
        (
            {"style": "dpo", "data": {"sources": [{"path": "p.jsonl", "template": "chat"}]}},
            "template is 'chat'",
        ),
        ({"style": "dpo", "data": {"sources": [{**LOG, "records": "sft"}]}}, "records is 'sft'"),
        ({"data": {"sources": [{"path": "p.jsonl", "template": "preference"}]}}, "only styles 'dpo' / 'kto'"),
        ({"data": {"sources": [{**LOG, "records": "kto"}]}}, "only styles 'dpo' / 'kto'"),
        (
            {"style": "kto", "data": {"sources": [{**LOG, "min_rating": 0.5, "max_rejected_rating": 0.5}]}},
            "max_rejected_rating must be below min_rating",
        ),
    ],
)
def test_preference_rules(patch: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config({**PAIRS, **patch})


def test_kto_accepts_pairs_and_robust_dpo_takes_label_smoothing() -> None:
    kto = parse_config(
        {**PAIRS, "style": "kto", "data": {"sources": [{"path": "p", "template": "preference"}]}}
    )
    assert kto.data.sources[0].template == "preference"
    robust = parse_config(
        {**PAIRS, "style": "dpo", "preference": {"loss": "robust", "label_smoothing": 0.1, "sft_weight": 1}}
    )
    assert robust.preference.label_smoothing == 0.1


def test_recipe_registry_covers_every_style() -> None:
    from typing import get_args

    from training.config import Style
    from training.recipes import RECIPES

    assert set(RECIPES) == set(get_args(Style))
    assert RECIPES["dpo"] == RECIPES["kto"] == "training.recipes.lora_preference"
