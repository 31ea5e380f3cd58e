"""The preference recipe's TRL configs come from the training config (no weights are loaded): DPO's beta,
loss and RPO weight, KTO's weights and sequential sampling, and the schedule every recipe shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.recipes.lora_preference import KTO_BALANCE, kto_weights, preference_arguments
from training.recipes.steps import RecipeJob


def job(config: Any, tmp_path: Path, validation: Any = None) -> RecipeJob:
    return RecipeJob(config, None, validation, "hash", tmp_path / "ckpt", "cpu")


def test_dpo_arguments(make_config: Any, tmp_path: Path) -> None:
    config = make_config(
        style="dpo",
        preference={"beta": 0.3, "loss": "ipo", "sft_weight": 0.5},
        train={"max_steps": 5, "batch_size": 4, "learning_rate": 5e-5},
        data={"max_seq_length": 192},
    )
    args = preference_arguments(config, job(config, tmp_path))
    assert type(args).__name__ == "DPOConfig"
    assert args.beta == 0.3 and args.loss_type == ["ipo", "sft"] and args.loss_weights == [1.0, 0.5]
    assert args.max_length == 192 and args.max_steps == 5 and args.per_device_train_batch_size == 4
    assert args.learning_rate == 5e-5  # not TRL's 1e-6 default
    assert args.gradient_checkpointing is False and args.bf16 is False  # CPU run: TRL's defaults overridden
    assert args.eval_strategy == "no"


def test_kto_arguments(make_config: Any, tmp_path: Path) -> None:
    config = make_config(
        style="kto",
        preference={"desirable_weight": 1.5, "undesirable_weight": 0.8},
        train={"early_stopping_patience": 2, "eval_every_steps": 3},
    )
    args = preference_arguments(config, job(config, tmp_path, validation=object()))
    assert type(args).__name__ == "KTOConfig"
    assert args.desirable_weight == 1.5 and args.undesirable_weight == 0.8 and args.beta == 0.1
    assert args.train_sampling_strategy == "sequential"  # KTO's KL term pairs neighbours of a batch
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"


@pytest.mark.parametrize(
    ("given", "counts", "expected"),
    [
        (("auto", "auto"), (30, 30), (1.0, 1.0)),  # ratio 1: in range
        (("auto", "auto"), (10, 30), (3.0, 1.0)),  # few desirable: weighted up to ratio 1
        (("auto", "auto"), (40, 10), (1.0, 3.0)),  # many desirable: undesirable up to ratio 4/3
        (("auto", "auto"), (1, 1000), (100.0, 1.0)),  # capped at the settings' bound
        (("auto", 2.0), (10, 10), (2.0, 2.0)),
        ((1.0, "auto"), (10, 40), (1.0, 0.25)),
        ((1.5, 0.8), (1, 100), (1.5, 0.8)),  # numbers are used as given
        (("auto", "auto"), (0, 12), (1.0, 1.0)),  # one side empty: nothing to balance
    ],
)
def test_kto_weights_balance_the_rarer_side(
    given: tuple[Any, Any], counts: tuple[int, int], expected: tuple[float, float]
) -> None:
    desirable, undesirable = kto_weights(*given, *counts)
    assert (desirable, undesirable) == pytest.approx(expected)
    n_desirable, n_undesirable = counts
    if n_desirable and n_undesirable and given != (1.5, 0.8) and max(expected) < 100:
        lo, hi = KTO_BALANCE
        assert lo - 1e-9 <= desirable * n_desirable / (undesirable * n_undesirable) <= hi + 1e-9


def test_kto_arguments_balance_auto_weights_from_the_training_labels(
    make_config: Any, tmp_path: Path
) -> None:
    from datasets import Dataset

    config = make_config(style="kto")
    train = Dataset.from_dict(
        {"prompt": ["p"] * 8, "completion": ["c"] * 8, "label": [True] * 2 + [False] * 6}
    )
    args = preference_arguments(config, RecipeJob(config, train, None, "hash", tmp_path / "ckpt", "cpu"))
    assert (args.desirable_weight, args.undesirable_weight) == pytest.approx((3.0, 1.0))
