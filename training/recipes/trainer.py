"""`TokenCountingTrainer`: TRL's SFTTrainer plus a count of useful (non-padding) training tokens, which the
metrics callback turns into tokens/s (TRL's own `num_tokens` counts row widths for packed rows), and an
optional plain loss path.

`plain_loss=True` computes the loss with the model's own cross-entropy over the logits instead of TRL's
fused LM head (which scores only labelled positions, in tiles, plus entropy / accuracy metrics). The
fused head saves memory on GPUs; on CPUs the plain path measured faster, so the recipe uses it there.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

__all__ = ["TokenCountingTrainer", "count_real_tokens"]


def count_real_tokens(inputs: dict[str, Any]) -> int:
    """Non-padding tokens of a micro-batch: the attention mask's sum for padded batches; for packed rows,
    each row up to its last token with a position id > 0 (sequences have >= 2 tokens, padding has 0)."""
    if inputs.get("attention_mask") is not None:
        return int(inputs["attention_mask"].sum())
    positions = inputs["position_ids"]
    index = torch.arange(1, positions.shape[1] + 1, device=positions.device)
    return int(((positions > 0) * index).max(dim=1).values.sum())


class TokenCountingTrainer(SFTTrainer):
    useful_tokens: int = 0
    plain_loss: bool = False

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.useful_tokens += count_real_tokens(inputs)
        return super().training_step(model, inputs, *args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not self.plain_loss:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        kwargs: dict[str, Any] = {"use_cache": False}
        if num_items_in_batch is not None:
            kwargs["num_items_in_batch"] = num_items_in_batch
        outputs = model(**inputs, **kwargs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss
