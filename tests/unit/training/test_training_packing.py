"""Packed rows: sequences packed into rows attend only within themselves (the loss equals the loss of the
sequences run one by one), labels never cross a boundary, and useful tokens are counted without padding."""

from __future__ import annotations

import datasets
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.utils import add_fused_lm_head

from training.recipes.packing import PackedRowsCollator, pack_rows
from training.recipes.trainer import count_real_tokens


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation="sdpa",
        use_cache=False,
    )
    return LlamaForCausalLM(config).eval()


def sequences() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 100, (n,), generator=g).tolist() for n in (5, 9, 3, 7, 12, 4)]


def test_packed_rows_match_separate_sequences() -> None:
    model = tiny_model()
    seqs = sequences()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            total += model(input_ids=ids, labels=ids).loss.item() * (len(s) - 1)
            count += len(s) - 1
        rows = pack_rows(
            datasets.Dataset.from_list([{"input_ids": s, "labels": [-100, *s[1:]]} for s in seqs]), 16
        )
        batch = PackedRowsCollator(pad_token_id=0)([rows[i] for i in range(len(rows))])
        assert "attention_mask" not in batch and batch["input_ids"].shape[1] <= 16
        assert len(rows) < len(seqs)
        plain = model(**batch, use_cache=False).loss.item()  # the CPU path: the model's own loss
        add_fused_lm_head(model, outputs=("log_probs",))
        out = model(**batch, use_cache=False, fused_lm_head=True)
        packed = (-(out.log_probs.sum() / out.label_mask.sum())).item()
    assert abs(packed - total / count) < 1e-5
    assert abs(plain - total / count) < 1e-5


def test_labels_do_not_cross_boundaries_and_tokens_are_counted() -> None:
    seqs = sequences()
    rows = pack_rows(datasets.Dataset.from_list([{"input_ids": s, "labels": list(s)} for s in seqs]), 16)
    batch = PackedRowsCollator(pad_token_id=0)([rows[i] for i in range(len(rows))])
    assert bool((batch["labels"][batch["position_ids"] == 0] == -100).all())
    assert count_real_tokens(batch) == sum(len(s) for s in seqs)
    padded = {"attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}
    assert count_real_tokens(padded) == 5
