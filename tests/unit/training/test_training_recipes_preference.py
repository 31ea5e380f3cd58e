"""The preference recipe's TRL configs come from the training config (no weights are loaded): DPO's beta,
loss and RPO weight, KTO's weights and sequential sampling, and the schedule every recipe shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.recipes.lora_preference import preference_arguments
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
