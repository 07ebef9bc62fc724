"""Tokenizer loading from a local directory (never the hub), with the pad token defaulting to eos."""

import json
from pathlib import Path


def load_tokenizer(path: str | Path):
    """An HF tokenizer from the local directory `path`; a missing pad token falls back to eos."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {str(path)!r} does not exist; set data.tokenizer_path (or the model path) "
            "to a local directory holding tokenizer.json / tokenizer_config.json"
        )
    config = Path(path) / "tokenizer_config.json"
    declared = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    if declared == "PreTrainedTokenizerFast":
        # AutoTokenizer would pick the class of config.json's model_type (e.g. Qwen2Tokenizer), whose
        # own pre-tokenizer silently drops spaces and newlines of a tokenizer.json built for another scheme.
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer at {str(path)!r} has neither a pad nor an eos token; add one to its config"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
