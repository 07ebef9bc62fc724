"""Session fixtures of the end-to-end tests: the tiny single-digit addition task (data, char
tokenizer, random tiny Qwen2) and a briefly SFT'd policy, each made once per test session."""

from pathlib import Path

import pytest
from e2e_support import SFT_STEPS, TinyTask, make_tiny_task, run_sft


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory) -> TinyTask:
    return make_tiny_task(tmp_path_factory.mktemp("tiny_task"))


@pytest.fixture(scope="session")
def sft_model(tiny_task: TinyTask, tmp_path_factory) -> Path:
    """The base model after SFT_STEPS steps of the SFT pipeline (its exported HF directory)."""
    return run_sft(tiny_task, tmp_path_factory.mktemp("sft"), SFT_STEPS)
