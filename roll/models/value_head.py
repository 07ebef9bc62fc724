"""The critic: a Megatron GPTModel whose output layer is a scalar value head.

`GPTCriticModel.forward` returns (b, s) values on the last pipeline stage (hidden states elsewhere).
The head is a (1, hidden) linear layer replicated on every TP rank; its HF name is `score.weight`
(as in transformers' `*ForSequenceClassification` with num_labels=1: no bias). It starts at zero,
so a critic freshly made from a causal-LM checkpoint predicts 0 everywhere.
"""

from typing import Any, Optional

import torch
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel import gather_from_sequence_parallel_region


class ValueHead(torch.nn.Module):
    """Per-token hidden (s, b, h) -> value (s, b, 1), called like megatron's output layer."""

    def __init__(self, config) -> None:
        super().__init__()
        self.sequence_parallel = config.sequence_parallel
        self.weight = torch.nn.Parameter(torch.zeros(1, config.hidden_size, dtype=config.params_dtype))
        # Under SP each TP rank sees its own sequence slice: the weight grads are partial sums that
        # megatron's finalize_model_grads all-reduces over TP for params marked sequence_parallel.
        self.weight.sequence_parallel = config.sequence_parallel  # type: ignore[attr-defined]

    def forward(
        self, hidden: torch.Tensor, weight: Optional[torch.Tensor] = None, runtime_gather_output: Any = None
    ) -> tuple[torch.Tensor, None]:
        values = torch.matmul(hidden, self.weight.t())
        if self.sequence_parallel:
            # Everything after the head runs replicated on the TP ranks, so the backward of the
            # gather keeps each rank's own slice instead of summing TP identical grads.
            values = gather_from_sequence_parallel_region(values, tensor_parallel_output_grad=False)
        return values, None


class GPTCriticModel(GPTModel):
    """GPTModel with `ValueHead` as output layer; forward returns (b, s) values on the last stage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.post_process:
            self.output_layer = ValueHead(self.config)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs.get("labels") is not None:
            raise ValueError("GPTCriticModel.forward takes no labels; compute the value loss outside")
        output = super().forward(*args, **kwargs)
        return output.squeeze(-1) if self.post_process else output
