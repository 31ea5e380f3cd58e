"""Packed rows without padding waste and without cross-sequence attention, cheap on CPUs.

TRL's own packing (`packing_strategy="bfd"`) flattens the whole batch into ONE sequence (padding-free),
made for FlashAttention's varlen kernels. With SDPA on CPU that builds a (batch x max_len)^2 mask per
layer and materialises the attention matrix: memory and time grow with the square of the batch size.

Here the dataset is packed best-fit-decreasing into rows of at most max_seq_length tokens (TRL's
`pack_dataset`), and `PackedRowsCollator` batches rows with `position_ids` restarting at each sequence
and no `attention_mask`; transformers then detects the packed format and builds a block-diagonal causal
mask per row (attention cost batch x max_len^2, the same as padded batches, with no padding). The label of
each sequence's first token is masked so no sequence predicts across a boundary.
"""

from __future__ import annotations

from typing import Any

import torch
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

__all__ = ["PackedRowsCollator", "pack_rows"]


def pack_rows(dataset: Any, max_len: int) -> Any:
    """Pack `input_ids` / `labels` rows best-fit-decreasing into rows of <= max_len tokens (adds
    `seq_lengths`; sequences are never split)."""
    return pack_dataset(dataset.select_columns(["input_ids", "labels"]), max_len, "bfd")


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """Batches packed rows: right padding, per-sequence position_ids, no attention mask."""

    def __init__(self, pad_token_id: int) -> None:
        super().__init__(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch.pop("attention_mask", None)
        labels: torch.Tensor = batch["labels"]
        labels[batch["position_ids"] == 0] = -100
        return batch
