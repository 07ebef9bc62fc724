"""Data: row loading (jsonl/parquet), prompt templates, local tokenizers, tokenised datasets with
resumable cursors, SFT collation, and the quickstart's synthetic task (`roll.data.synthetic`)."""

from roll.data.datasets import PromptDataset, SFTDataset, collate_sft
from roll.data.io import load_rows
from roll.data.templates import encode_prompt
from roll.data.tokenizer import load_tokenizer

__all__ = ["PromptDataset", "SFTDataset", "collate_sft", "encode_prompt", "load_rows", "load_tokenizer"]
