"""LoRA / QLoRA preference tuning (styles dpo and kto) with TRL's DPOTrainer / KTOTrainer - the recipe,
top to bottom.

    run(job, emit, should_stop) -> RecipeOutput
      1. runtime: threads, seeds, device
      2. tokenizer + base model (fp32 on CPU, bf16 on GPU; 4-bit NF4 via bitsandbytes for QLoRA)
      3. adapter: a fresh LoRA, or the parent adapter (`init_adapter`, e.g. the champion) loaded trainable;
         the reference model is the starting point - TRL keeps a frozen "ref" copy of a parent adapter, or
         disables a fresh one (= the base model), so no second model is loaded
      4. trainer: DPOConfig / KTOConfig from the config (beta, loss, weights; the same schedule, eval,
         checkpoints, early stopping and metrics callback as SFT - NaN / explosion stops the run)
      5. train (resuming from the latest checkpoint when asked), final validation loss
      6. save the trained adapter only (safetensors) and return its bytes - the driver writes the artifact

The data arrives as TRL rows (dpo: prompt/chosen/rejected; kto: prompt/completion/label, kto rows in a
seeded order because KTOTrainer samples sequentially), prepared, cleaned and split by
`training.data.pipeline`; TRL tokenizes them with the base model's chat template. Records from tool-calling
traffic arrive rendered by the rule serving uses (`training.data.tools`, via `encode_preference`): answers as
the text the template would make of their calls, and a `tools` column (JSON text, null where serving shows no
definitions) that TRL gives the chat template. Runs the same in-process and inside a Ray worker; it never
touches the final run folder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from training.config import TrainingConfig
from training.monitor import MetricsCallback
from training.recipes.steps import (
    RecipeJob,
    RecipeOutput,
    attach_adapter,
    fp32_trainable_on_cpu,
    hardware_info,
    load_base_model,
    load_tokenizer,
    prepare_checkpoints,
    setup_runtime,
    train_and_save,
    trainer_arguments,
    trainer_callbacks,
)

__all__ = ["KTO_BALANCE", "kto_weights", "preference_arguments", "run"]


KTO_BALANCE = (1.0, 4 / 3)
"""The range the KTO paper advises for desirable_weight x #desirable / (undesirable_weight x #undesirable)."""


def kto_weights(
    desirable: float | Literal["auto"],
    undesirable: float | Literal["auto"],
    n_desirable: int,
    n_undesirable: int,
) -> tuple[float, float]:
    """KTOTrainer's (desirable_weight, undesirable_weight): numbers as given; an `auto` weight is 1 unless
    that puts the weighted ratio of desirable to undesirable records outside `KTO_BALANCE`, in which case
    it is the weight that brings the ratio to the nearest end of the range (the rarer side is weighted up;
    capped at 100, the settings' bound). With no records on one side, `auto` is 1."""
    lo, hi = KTO_BALANCE

    def nearest(ratio: float) -> float:
        return lo if ratio < lo else hi if ratio > hi else ratio

    if desirable != "auto" and undesirable != "auto":
        return desirable, undesirable
    if not n_desirable or not n_undesirable:
        return (1.0 if desirable == "auto" else desirable), (1.0 if undesirable == "auto" else undesirable)
    if desirable == "auto" and undesirable == "auto":
        ratio = n_desirable / n_undesirable
        if ratio < lo:  # few desirable records: weight them up
            return min(nearest(ratio) / ratio, 100.0), 1.0
        return 1.0, min(ratio / nearest(ratio), 100.0)  # many: weight the undesirable ones up
    if isinstance(undesirable, float | int):  # desirable is auto
        ratio = n_desirable / (undesirable * n_undesirable)
        return min(nearest(ratio) / ratio, 100.0), undesirable
    assert isinstance(desirable, float | int)  # undesirable is auto
    ratio = desirable * n_desirable / n_undesirable
    return desirable, min(ratio / nearest(ratio), 100.0)


def _kto_counts(train: Any) -> tuple[int, int]:
    """(#desirable, #undesirable) records of a KTO training split (TRL rows with a boolean `label`)."""
    labels = (
        list(train["label"]) if train is not None and "label" in getattr(train, "column_names", ()) else []
    )
    desirable = sum(1 for label in labels if label)
    return desirable, len(labels) - desirable


def preference_arguments(config: TrainingConfig, job: RecipeJob) -> Any:
    """TRL DPOConfig (style dpo) or KTOConfig (style kto) for this run."""
    p = config.preference
    common = trainer_arguments(config, job)
    if config.style == "kto":
        from trl import KTOConfig

        desirable, undesirable = kto_weights(
            p.desirable_weight, p.undesirable_weight, *_kto_counts(job.train)
        )
        return KTOConfig(**common, beta=p.beta, desirable_weight=desirable, undesirable_weight=undesirable)
    from trl import DPOConfig

    losses: list[str] = [p.loss]
    weights = [1.0]
    if p.sft_weight:
        losses, weights = [p.loss, "sft"], [1.0, p.sft_weight]
    return DPOConfig(
        **common,
        beta=p.beta,
        loss_type=losses,
        loss_weights=weights,
        label_smoothing=p.label_smoothing,
    )


def _trainer_class(style: str) -> Any:
    if style == "kto":
        from trl import KTOTrainer

        return KTOTrainer
    from trl import DPOTrainer

    return DPOTrainer


# --------------------------------------------------------------------------------------------- recipe


def run(
    job: RecipeJob,
    emit: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], str | None] = lambda: None,
) -> RecipeOutput:
    """Train one adapter on preferences; raises TrainingDiverged / TrainingCancelled / TrainingTimeout /
    TrainingError."""
    config, device = job.config, job.device

    # 1. Runtime
    setup_runtime(config, device)
    emit(
        {
            "type": "log",
            "message": f"{config.style} on {device.upper()} ({hardware_info(device).get('gpu', 'cpu')}), "
            f"beta {config.preference.beta:g}, reference: "
            + ("the parent adapter" if config.init_adapter is not None else "the base model"),
        }
    )

    # 2-3. Tokenizer, base model, adapter (the reference is its starting point)
    from transformers import PrinterCallback

    tokenizer = load_tokenizer(config)
    model = attach_adapter(load_base_model(config, device), config)

    # 4. Trainer
    monitor = MetricsCallback(emit, should_stop, config.train.divergence_factor, device)
    callbacks = trainer_callbacks(monitor, config, job)
    resume = prepare_checkpoints(config, job, emit)
    args = preference_arguments(config, job)
    if config.style == "kto":
        n_desirable, n_undesirable = _kto_counts(job.train)
        emit(
            {
                "type": "log",
                "message": f"kto weights: desirable {args.desirable_weight:.3g}, undesirable "
                f"{args.undesirable_weight:.3g} ({n_desirable} desirable / {n_undesirable} undesirable "
                "training records)",
            }
        )
    trainer = _trainer_class(config.style)(
        model=model,
        args=args,
        train_dataset=job.train,
        eval_dataset=job.validation,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # events replace the trainer's stdout dicts
    fp32_trainable_on_cpu(trainer, device)

    # 5. Train, 6. save the adapter (bytes; the driver writes the artifact), drop checkpoints
    return train_and_save(trainer, monitor, config, job, device, resume, emit)
