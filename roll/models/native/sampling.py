"""Next-token sampling with per-row parameters: greedy, temperature, top-k, top-p (pure tensor code).

Each row brings its own uniform draw, and the token is picked by inverse CDF over the truncated
distribution, so a row's choice depends only on its own logits and its own random stream, never on
which other rows share the batch.
"""

import torch


def sample_next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens (B,) int64, their log-probs (B,) float32).

    logits (B, V); temperature (B,) float, 0 = greedy; top_k (B,) int, -1 = off; top_p (B,) float in
    (0, 1]; uniforms (B,) in [0, 1). The log-prob is `log_softmax(logits / temperature)` (unscaled
    when greedy) at the token, over the full vocabulary, i.e. before top-k/top-p truncation.
    """
    logits = logits.float()
    greedy = temperature == 0
    scaled = logits / torch.where(greedy, 1.0, temperature.float())[:, None]
    log_probs = torch.log_softmax(scaled, dim=-1)

    sorted_logits, sorted_ids = scaled.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    ranks = torch.arange(vocab, device=logits.device)
    k = torch.where(top_k < 0, vocab, top_k)
    sorted_logits = sorted_logits.masked_fill(ranks >= k[:, None], float("-inf"))
    # Top-p on the top-k-renormalised distribution (transformers' and vLLM's order): drop a token when
    # the mass of the tokens ranked above it already reaches top_p; the best token always stays.
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    probs = probs.masked_fill(mass_before >= top_p[:, None], 0.0)
    cdf = probs.cumsum(dim=-1)
    targets = (uniforms.to(cdf.dtype) * cdf[:, -1])[:, None]
    picked = torch.searchsorted(cdf, targets, right=True).squeeze(1)
    # Rounding can put the target at the very end of the cdf; fall back to the last kept token.
    last_kept = (probs > 0).sum(dim=-1) - 1
    picked = torch.minimum(picked, last_kept)
    sampled = sorted_ids.gather(1, picked[:, None]).squeeze(1)

    tokens = torch.where(greedy, logits.argmax(dim=-1), sampled)
    return tokens, log_probs.gather(1, tokens[:, None]).squeeze(1)
