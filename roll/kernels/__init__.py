"""Hot tensor paths as Triton kernels, each beside its plain-torch reference; dispatch picks Triton on CUDA.

- `logprobs.logprobs_from_logits`: per-token log p(label) and entropy, vocab-parallel, no (N, V) softmax.
- `group_advantage.group_advantage`: GRPO / RLOO / REINFORCE++-baseline group normalisation.

The `*_triton` modules are imported only when a Triton path runs, so CPU use never needs Triton.
"""
