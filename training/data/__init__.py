"""Data preparation for fine-tuning: sources, templates, cleaning, PII scrubbing, splits, data card.

Entry point: `prepare_data(config, tokenizer) -> PreparedData` (see `training.data.pipeline`).
"""

from training.data.card import DataCard
from training.data.example import Example
from training.data.pipeline import PreparedData, load_tokenizer, prepare_data

__all__ = ["DataCard", "Example", "PreparedData", "load_tokenizer", "prepare_data"]
