"""Tokenizer loading from a local directory (never the hub), with the pad token defaulting to eos."""

from pathlib import Path


def load_tokenizer(path: str | Path):
    """An HF tokenizer from the local directory `path`; a missing pad token falls back to eos."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {str(path)!r} does not exist; set data.tokenizer_path (or the model path) "
            "to a local directory holding tokenizer.json / tokenizer_config.json"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"tokenizer at {str(path)!r} has neither a pad nor an eos token; add one to its config"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
