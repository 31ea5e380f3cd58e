"""Steps every LoRA recipe shares, as plain functions the recipes compose (torchtune style): the job a
recipe receives and the output it returns, runtime setup (threads, seeds), the tokenizer (the data
pipeline's), the base model (fp32 CPU / bf16 GPU / NF4 for QLoRA), a fresh or parent adapter, the
TrainingArguments and callbacks (metrics, early stopping) every trainer gets from the config, checkpoints
and resume, the end-of-run checks (divergence, cancel, timeout, final validation loss), the adapter bytes,
and training + saving once a recipe has built its trainer. `lora_sft` and `lora_preference` are the
recipes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainingConfig
from training.errors import TrainingCancelled, TrainingDiverged, TrainingError, TrainingTimeout
from training.monitor import MetricsCallback, peak_rss_mb

__all__ = [
    "ADAPTER_FILES",
    "RecipeJob",
    "RecipeOutput",
    "adapter_bytes",
    "attach_adapter",
    "compute_dtype",
    "fp32_trainable_on_cpu",
    "hardware_info",
    "load_base_model",
    "load_tokenizer",
    "optimizer_name",
    "prepare_checkpoints",
    "run_outcome",
    "setup_runtime",
    "train_and_save",
    "trainer_arguments",
    "trainer_callbacks",
    "use_gradient_checkpointing",
]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
RESUME_MARKER = "tuneloop_resume.json"


@dataclass
class RecipeJob:
    """Everything the recipe needs, picklable (sent to the Ray worker)."""

    config: TrainingConfig
    train: Any  # datasets.Dataset with input_ids / labels
    validation: Any | None
    dataset_hash: str
    checkpoint_dir: Path
    device: str  # "cpu" | "cuda"


@dataclass
class RecipeOutput:
    adapter_files: dict[str, bytes]
    stop_reason: str
    final_eval_loss: float | None
    train_seconds: float
    hardware: dict[str, Any]
    resumed_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def setup_runtime(config: TrainingConfig, device: str) -> None:
    import torch
    from transformers import set_seed

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device == "cpu":
        torch.set_num_threads(config.runtime.torch_threads or os.cpu_count() or 1)
    set_seed(config.train.seed)


def hardware_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def compute_dtype(device: str) -> Any:
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(config: TrainingConfig) -> Any:
    """The base model's tokenizer, loaded as the data pipeline loaded it to tokenize the rows (the same pad
    token: EOS when the tokenizer has none)."""
    from training.data.pipeline import load_tokenizer as pipeline_tokenizer

    assert config.base_model is not None, "the preflight checks base_model before any recipe runs"
    return pipeline_tokenizer(config.base_model)


def load_base_model(config: TrainingConfig, device: str) -> Any:
    """The base model, frozen; NF4-quantized for QLoRA."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bitcompute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(str(config.base_model), **kwargs)
    model.config.use_cache = False
    if config.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=use_gradient_checkpointing(config, device)
        )
    return model


def attach_adapter(model: Any, config: TrainingConfig) -> Any:
    """A fresh LoRA on the configured modules, or the parent adapter loaded trainable (sequential /
    transfer keep the parent's shape)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if config.init_adapter is not None:
        peft_model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
        # The parent's config names the base by id; point it at the local folder so saving works offline.
        for adapter_config in peft_model.peft_config.values():
            adapter_config.base_model_name_or_path = str(config.base_model)
        return peft_model
    targets: Any = config.lora.target_modules
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.lora_alpha,
        lora_dropout=config.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def use_gradient_checkpointing(config: TrainingConfig, device: str) -> bool:
    """The run's gradient checkpointing: the configured value, or for `auto` on when training on CUDA."""
    setting = config.train.gradient_checkpointing
    return device == "cuda" if setting == "auto" else bool(setting)


def optimizer_name(config: TrainingConfig, device: str) -> str:
    if config.train.optimizer != "auto":
        return config.train.optimizer
    if device == "cuda":
        return "paged_adamw_8bit" if config.quantization == "nf4" else "adamw_torch_fused"
    return "adamw_torch"


def trainer_arguments(config: TrainingConfig, job: RecipeJob) -> dict[str, Any]:
    """The TrainingArguments every recipe's TRL config gets from the training config: schedule, batch,
    optimizer, precision, evaluation / checkpoint / early-stopping strategy, logging, device."""
    import torch

    t = config.train
    has_eval = job.validation is not None
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if t.eval_every_steps else "epoch"
    early = bool(t.early_stopping_patience) and has_eval
    if early:
        save_strategy, save_steps = eval_strategy, t.eval_every_steps
    else:
        save_strategy, save_steps = ("steps", t.save_every_steps) if t.save_every_steps else ("epoch", None)
    bf16 = job.device == "cuda" and compute_dtype(job.device) == torch.bfloat16
    return {
        "output_dir": str(job.checkpoint_dir),
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": optimizer_name(config, job.device),
        "gradient_checkpointing": use_gradient_checkpointing(config, job.device),
        "seed": t.seed,
        "data_seed": t.seed,
        "bf16": bf16,
        "fp16": job.device == "cuda" and not bf16,
        "use_cpu": job.device == "cpu",
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "eval_strategy": eval_strategy,
        "eval_steps": t.eval_every_steps,
        "save_strategy": save_strategy,
        "save_steps": save_steps or 500,
        "save_total_limit": 2,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": config.data.max_seq_length,
        "dataset_num_proc": None,
    }


def trainer_callbacks(monitor: MetricsCallback, config: TrainingConfig, job: RecipeJob) -> list[Any]:
    """The trainer's callbacks: the metrics callback (`monitor`), then early stopping when the config asks
    for it and the run has a validation split."""
    callbacks: list[Any] = [monitor]
    if config.train.early_stopping_patience and job.validation is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(
            EarlyStoppingCallback(config.train.early_stopping_patience, config.train.early_stopping_threshold)
        )
    return callbacks


def fp32_trainable_on_cpu(trainer: Any, device: str) -> None:
    """TRL casts QLoRA adapter weights to bf16 (a GPU recommendation); on CPU fp32 is faster and exact."""
    import torch

    if device != "cpu" or trainer.model is None:
        return
    for param in trainer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def run_outcome(
    trainer: Any, monitor: Any, config: TrainingConfig, job: RecipeJob
) -> tuple[str, float | None]:
    """After `trainer.train()`: raise for divergence / cancel / timeout (the metrics callback's verdict),
    else (stop reason, final validation loss - the best one when early stopping reloaded the best)."""
    step = trainer.state.global_step
    if monitor.diverged:
        raise TrainingDiverged(f"stopped at step {step}: {monitor.diverged}")
    if monitor.stopped == "cancelled":
        raise TrainingCancelled(f"cancelled at step {step}")
    if monitor.stopped:
        raise TrainingTimeout(f"stopped at step {step}: {monitor.stopped}")
    early = bool(config.train.early_stopping_patience) and job.validation is not None
    stop_reason = "early_stopped" if early and step < trainer.state.max_steps else "completed"
    final_eval: float | None = None
    if early and monitor.eval_losses:
        final_eval = min(monitor.eval_losses)  # the best checkpoint was loaded at the end
    elif monitor.last_eval_step == step and monitor.eval_losses:
        final_eval = monitor.eval_losses[-1]
    elif job.validation is not None:
        final_eval = float(trainer.evaluate()["eval_loss"])
    return stop_reason, final_eval


def prepare_checkpoints(
    config: TrainingConfig, job: RecipeJob, emit: Callable[[dict[str, Any]], None]
) -> str | None:
    """Prepare the checkpoint folder; with `train.resume`, the latest checkpoint of the same data."""
    folder = job.checkpoint_dir
    marker = folder / RESUME_MARKER
    if config.train.resume and marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("dataset_hash") != job.dataset_hash:
            raise TrainingError(
                f"cannot resume from {folder}: its checkpoints were trained on dataset "
                f"{saved.get('dataset_hash', '?')[:12]}..., "
                f"this run prepared {job.dataset_hash[:12]}...; set train.resume: false to start over"
            )
        checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
        if checkpoints:
            emit({"type": "log", "message": f"resuming from {checkpoints[-1]}"})
            return str(checkpoints[-1])
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    marker.write_text(json.dumps({"dataset_hash": job.dataset_hash, "name": config.name}))
    return None


def adapter_bytes(model: Any, config: TrainingConfig) -> dict[str, bytes]:
    """Save with peft into a scratch folder; keep only adapter_config.json + adapter_model.safetensors."""
    with tempfile.TemporaryDirectory(prefix="tuneloop-adapter-") as scratch:
        # Only the trained adapter: preference trainers add a frozen "ref" copy of a parent adapter.
        model.save_pretrained(scratch, safe_serialization=True, selected_adapters=["default"])
        folder = Path(scratch)
        missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
        if missing:
            raise TrainingError(
                f"peft did not write {missing} (wrote {sorted(p.name for p in folder.iterdir())})"
            )
        adapter_cfg = json.loads((folder / "adapter_config.json").read_text())
        adapter_cfg["base_model_name_or_path"] = config.base_id
        return {
            "adapter_config.json": (json.dumps(adapter_cfg, indent=2, sort_keys=True) + "\n").encode(),
            "adapter_model.safetensors": (folder / "adapter_model.safetensors").read_bytes(),
        }


def train_and_save(
    trainer: Any,
    monitor: Any,
    config: TrainingConfig,
    job: RecipeJob,
    device: str,
    resume: str | None,
    emit: Callable[[dict[str, Any]], None],
) -> RecipeOutput:
    """Every recipe's last two steps: train (timed, wall and CPU), check the outcome (`run_outcome`), take
    the adapter's bytes (the driver writes the artifact), drop checkpoints unless kept, report the end."""
    started, cpu_started = time.perf_counter(), time.process_time()
    output = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    stop_reason, final_eval = run_outcome(trainer, monitor, config, job)
    files = adapter_bytes(trainer.model, config)
    if not config.output.keep_checkpoints:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    hardware = hardware_info(device) | {"peak_rss_mb": round(peak_rss_mb(), 1)}
    emit({"type": "end", "reason": stop_reason, "step": int(trainer.state.global_step)})
    return RecipeOutput(
        adapter_files=files,
        stop_reason=stop_reason,
        final_eval_loss=final_eval,
        train_seconds=round(train_seconds, 2),
        hardware=hardware,
        resumed_from=resume,
        extra={
            "trainer_train_loss": float(output.training_loss),
            "global_step": int(trainer.state.global_step),
            "train_cpu_seconds": round(train_cpu_seconds, 2),
        },
    )
