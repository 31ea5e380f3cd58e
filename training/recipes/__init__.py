"""Training recipes: one readable file per procedure (`lora_sft`: LoRA/QLoRA supervised fine-tuning)."""
