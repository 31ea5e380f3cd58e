"""LoRA / QLoRA supervised fine-tuning with TRL's SFTTrainer and peft - the recipe, top to bottom.

    run(job, emit, should_stop) -> RecipeOutput
      1. runtime: threads, seeds, device
      2. tokenizer + base model (fp32 on CPU, bf16 on GPU; 4-bit NF4 via bitsandbytes for QLoRA)
      3. adapter: a fresh LoRA, or the parent adapter (sequential / transfer) loaded trainable
      4. trainer: SFTConfig from the config (packed rows / length grouping, grad accumulation, eval,
         checkpoints, early stopping), the metrics callback (loss, val loss, lr, grad norm, tokens/s,
         memory; NaN / explosion stops the run)
      5. train (resuming from the latest checkpoint when asked), final validation loss
      6. save the adapter (safetensors only) and return its bytes - the driver writes the artifact

The data arrives tokenized (`input_ids`, `labels` with -100 outside assistant turns), so TRL only packs
or batches it. Runs the same in-process and inside a Ray worker; it never touches the final run folder.

Shared steps (tokenizer, base model, adapter, arguments, callbacks, checkpoints, outcome, adapter bytes)
live in `training.recipes.steps`; this file is the SFT procedure that composes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    use_gradient_checkpointing,
)

__all__ = [
    "RecipeJob",
    "RecipeOutput",
    "attach_adapter",
    "load_base_model",
    "run",
    "sft_arguments",
    "use_gradient_checkpointing",
]


def sft_arguments(config: TrainingConfig, job: RecipeJob) -> Any:
    """TRL SFTConfig for this run."""
    from trl import SFTConfig

    return SFTConfig(
        **trainer_arguments(config, job),
        packing=False,  # "packed" rows are built by training.recipes.packing (see there why not TRL's)
        train_sampling_strategy="group_by_length" if config.train.batching == "grouped" else "random",
    )


# --------------------------------------------------------------------------------------------- recipe


def run(
    job: RecipeJob,
    emit: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], str | None] = lambda: None,
) -> RecipeOutput:
    """Train one adapter; raises TrainingDiverged / TrainingCancelled / TrainingTimeout / TrainingError."""
    config, device = job.config, job.device

    # 1. Runtime
    setup_runtime(config, device)
    emit(
        {
            "type": "log",
            "message": f"training on {device.upper()} ({hardware_info(device).get('gpu', 'cpu')})",
        }
    )

    # 2-3. Tokenizer, base model, adapter
    from transformers import PrinterCallback

    from training.recipes.packing import PackedRowsCollator, pack_rows
    from training.recipes.trainer import TokenCountingTrainer

    tokenizer = load_tokenizer(config)
    model = attach_adapter(load_base_model(config, device), config)

    # 4. Trainer
    monitor = MetricsCallback(emit, should_stop, config.train.divergence_factor, device)
    callbacks = trainer_callbacks(monitor, config, job)
    resume = prepare_checkpoints(config, job, emit)
    train_data, eval_data, collator = job.train, job.validation, None
    if config.train.batching == "packed":
        train_data = pack_rows(train_data, config.data.max_seq_length)
        eval_data = pack_rows(eval_data, config.data.max_seq_length) if eval_data is not None else None
        collator = PackedRowsCollator(tokenizer.pad_token_id)
        emit(
            {
                "type": "log",
                "message": f"packed {len(job.train)} sequences into {len(train_data)} rows "
                f"of <= {config.data.max_seq_length} tokens",
            }
        )
    trainer = TokenCountingTrainer(
        model=model,
        args=sft_arguments(config, job),
        data_collator=collator,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # events replace the trainer's stdout dicts
    trainer.plain_loss = device == "cpu"  # see training.recipes.trainer: faster on CPU, fused head on GPU
    monitor.token_count = lambda: trainer.useful_tokens
    fp32_trainable_on_cpu(trainer, device)

    # 5. Train, 6. save the adapter (bytes; the driver writes the artifact), drop checkpoints
    return train_and_save(trainer, monitor, config, job, device, resume, emit)
