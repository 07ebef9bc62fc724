"""Per-row sampling (greedy / temperature / top-k / top-p) against a plain-Python reference of the
truncated distribution: a grid of uniforms must hit each token in proportion to its probability."""

import math

import pytest
import torch

from roll.models.native.sampling import sample_next_tokens


def reference_distribution(logits: list[float], temperature: float, top_k: int, top_p: float) -> list[float]:
    """Sampling probabilities per token id, written as the textbook loop (top-k, then top-p)."""
    scaled = [x / temperature for x in logits]
    order = sorted(range(len(scaled)), key=lambda i: -scaled[i])
    if top_k > 0:
        order = order[:top_k]
    total = sum(math.exp(scaled[i]) for i in order)
    kept, mass = [], 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.append(i)
        mass += math.exp(scaled[i]) / total
    kept_total = sum(math.exp(scaled[i]) for i in kept)
    return [math.exp(scaled[i]) / kept_total if i in kept else 0.0 for i in range(len(logits))]


@pytest.mark.parametrize(
    "temperature,top_k,top_p", [(1.0, -1, 1.0), (0.7, 3, 1.0), (1.3, -1, 0.6), (0.9, 4, 0.75), (1.0, 1, 1.0)]
)
def test_uniform_grid_reproduces_truncated_distribution(temperature, top_k, top_p):
    logits = [0.3, -1.2, 2.0, 0.9, 1.4, -0.4, 0.0, 1.1]
    draws = 4000
    uniforms = (torch.arange(draws, dtype=torch.float64) + 0.5) / draws
    rows = torch.tensor([logits]).expand(draws, -1)
    tokens, logprobs = sample_next_tokens(
        rows,
        torch.full((draws,), temperature),
        torch.full((draws,), top_k),
        torch.full((draws,), top_p),
        uniforms,
    )
    frequencies = torch.bincount(tokens, minlength=len(logits)).double() / draws
    expected = torch.tensor(reference_distribution(logits, temperature, top_k, top_p), dtype=torch.float64)
    torch.testing.assert_close(frequencies, expected, atol=2.0 / draws, rtol=0)
    # Log-probs are of the full temperature-scaled distribution, before truncation.
    full = torch.log_softmax(torch.tensor(logits) / temperature, dim=-1)
    torch.testing.assert_close(logprobs, full[tokens])


def test_rows_use_their_own_parameters_and_greedy_ignores_the_draw():
    logits = torch.tensor([[0.1, 3.0, 0.2, 2.9], [1.0, 0.0, 0.5, 0.9], [0.0, 0.1, 0.2, 0.3]])
    tokens, logprobs = sample_next_tokens(
        logits,
        temperature=torch.tensor([0.0, 1.0, 2.0]),
        top_k=torch.tensor([-1, 1, -1]),
        top_p=torch.tensor([1.0, 1.0, 1e-6]),
        uniforms=torch.tensor([0.99, 0.99, 0.99]),
    )
    assert tokens.tolist() == [1, 0, 3]
    torch.testing.assert_close(logprobs[0], torch.log_softmax(logits[0], -1)[1])
    torch.testing.assert_close(logprobs[2], torch.log_softmax(logits[2] / 2.0, -1)[3])
