"""QLoRA on a CUDA GPU: the project's recipe (4-bit NF4 base, TRL SFTTrainer, packed rows) vs a plain
PyTorch + peft QLoRA loop that pads each batch, same model / data / LoRA settings / examples, same run; and
the same recipe without quantization (bf16 base, plain LoRA) for the memory QLoRA saves.

    python -m benchmarks.gpu_qlora [--examples 512] [--batch-size 16] [--max-seq-length 256]
                                   [--base-model DIR] [--tag NAME] [--model-note TEXT]

Reports useful (non-padding) tokens/s, epoch wall time and peak GPU memory (torch.cuda.max_memory_allocated)
per side and their ratios; writes benchmarks/results/gpu_qlora[_TAG].{json,md}. Without CUDA it prints a
skip message and exits 0 without touching the results. Needs bitsandbytes, trl, peft, datasets on the
machine. `--model-note` is written into the results (e.g. when the weights are a random initialisation of
a larger architecture: throughput and memory depend on the shapes, the loss values then mean nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import child_process
from benchmarks.training_throughput import (
    base_config,
    make_chats,
    padded_batches,
    padded_rows,
    recipe_figures,
    train_padded_epoch,
)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def side_recipe(config: dict[str, Any], quantization: str = "nf4") -> dict[str, Any]:
    import torch

    from training.api import train

    config = {**config, "quantization": quantization}
    torch.cuda.reset_peak_memory_stats()
    return {
        **recipe_figures(train(config, use_ray=False)),
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "gpu": torch.cuda.get_device_name(0),
    }


def side_padded(config_raw: dict[str, Any]) -> dict[str, Any]:
    import bitsandbytes as bnb
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from training.recipes.steps import attach_adapter, use_gradient_checkpointing

    config, tokenizer, rows = padded_rows(config_raw)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(config.base_model), quantization_config=quant, dtype=dtype, device_map={"": 0}
    )
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=use_gradient_checkpointing(config, "cuda")
    )
    peft_model = attach_adapter(model, config)
    peft_model.train()  # from_pretrained returns eval mode; gradient checkpointing acts in train mode only
    optimizer = bnb.optim.PagedAdamW8bit(
        [p for p in peft_model.parameters() if p.requires_grad], lr=config.train.learning_rate
    )
    batches = padded_batches(rows, config.train.batch_size, tokenizer.pad_token_id)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    useful, losses = train_padded_epoch(peft_model, optimizer, batches, device="cuda", autocast_dtype=dtype)
    torch.cuda.synchronize()
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "useful_tokens": useful,
        "steps": len(losses),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "gpu": torch.cuda.get_device_name(0),
    }


def run_child(side: str, spec: Path) -> dict[str, Any]:
    proc = child_process.run("benchmarks.gpu_qlora", [side, str(spec)], timeout_s=3600)
    out: dict[str, Any] = child_process.result_of(proc, side)
    out["tokens_per_s"] = round(out["useful_tokens"] / out["wall_s"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument(
        "--base-model", default=None, help="local model folder (default: the prepared default)"
    )
    parser.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="all sides; auto = the recipe's default (on for CUDA)",
    )
    parser.add_argument("--tag", default="", help="results name suffix: gpu_qlora_<tag>")
    parser.add_argument("--model-note", default="", help="what the model is, written into the results")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "SPEC"))
    args = parser.parse_args()
    if args.child:
        side, spec_file = args.child
        config = json.loads(Path(spec_file).read_text())["config"]
        if side == "padded":
            out = side_padded(config)
        else:
            out = side_recipe(config, quantization="none" if side == "recipe_lora" else "nf4")
        child_process.report(out)
        return
    if not cuda_available():
        print("gpu_qlora: skipped - no CUDA GPU on this machine (results left untouched)")
        return

    base = args.base_model
    if base is None:
        from serving.models import prepare_default_model

        base = str(prepare_default_model())
    with tempfile.TemporaryDirectory(prefix="tuneloop-gpu-qlora-") as tmp:
        data = Path(tmp) / "chats.jsonl"
        data.write_text("".join(json.dumps(c) + "\n" for c in make_chats(args.examples)), encoding="utf-8")
        config = base_config(base, data, Path(tmp) / "runs", args)
        config["name"] = "bench-gpu-qlora"
        config["quantization"] = "nf4"
        config["runtime"] = {"device": "cuda"}
        gc_setting = {"auto": "auto", "on": True, "off": False}[args.gradient_checkpointing]
        config["train"]["gradient_checkpointing"] = gc_setting
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"config": config}))
        padded = run_child("padded", spec)
        recipe = run_child("recipe", spec)
        lora = run_child("recipe_lora", spec)
    result = {
        "benchmark": "gpu_qlora",
        "setup": {
            "examples": args.examples,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "model": Path(base).name,
            "quantization": "nf4 (double quant), LoRA r=16 q/k/v/o",
            "gpu": recipe.get("gpu"),
            "model_note": args.model_note,
            "gradient_checkpointing": args.gradient_checkpointing,
        },
        "baseline_padded_qlora_loop": padded,
        "recipe_qlora_packed": recipe,
        "recipe_lora_bf16_packed": lora,
        "ratio_tokens_per_s": round(recipe["tokens_per_s"] / padded["tokens_per_s"], 2),
        "ratio_peak_gpu_mem": round(recipe["peak_gpu_mem_mb"] / padded["peak_gpu_mem_mb"], 2),
        "ratio_qlora_vs_lora_peak_gpu_mem": round(recipe["peak_gpu_mem_mb"] / lora["peak_gpu_mem_mb"], 2),
        "ratio_qlora_vs_lora_tokens_per_s": round(recipe["tokens_per_s"] / lora["tokens_per_s"], 2),
    }
    name = f"gpu_qlora_{args.tag}" if args.tag else "gpu_qlora"
    md = [
        "# QLoRA on GPU: recipe (packed rows) vs plain padded QLoRA loop",
        "",
        f"{args.examples} variable-length chats, batch {args.batch_size}, "
        f"max_seq_length {args.max_seq_length}, "
        f"{Path(base).name}, {result['setup']['quantization']}, GPU {recipe.get('gpu')}, "
        f"gradient checkpointing {args.gradient_checkpointing} (auto = on for CUDA).",
        *([f"Model: {args.model_note}"] if args.model_note else []),
        "",
        "| side | useful tokens | steps | epoch wall s | useful tokens/s | peak GPU MiB |",
        "|---|---|---|---|---|---|",
        f"| plain padded QLoRA loop | {padded['useful_tokens']} | {padded['steps']} | {padded['wall_s']} "
        f"| {padded['tokens_per_s']} | {padded['peak_gpu_mem_mb']} |",
        f"| tuneloop recipe | {recipe['useful_tokens']} | {recipe['steps']} | {recipe['wall_s']} "
        f"| {recipe['tokens_per_s']} | {recipe['peak_gpu_mem_mb']} |",
        f"| tuneloop recipe, LoRA on a bf16 base (no quantization) | {lora['useful_tokens']} "
        f"| {lora['steps']} | {lora['wall_s']} | {lora['tokens_per_s']} | {lora['peak_gpu_mem_mb']} |",
        "",
        f"Recipe vs padded QLoRA loop: tokens/s {result['ratio_tokens_per_s']}x, "
        f"peak GPU memory {result['ratio_peak_gpu_mem']}x. "
        "QLoRA vs bf16 LoRA (both the recipe): peak GPU memory "
        f"{result['ratio_qlora_vs_lora_peak_gpu_mem']}x, "
        f"tokens/s {result['ratio_qlora_vs_lora_tokens_per_s']}x.",
    ]
    from benchmarks.common import write_results

    write_results(name, result, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
