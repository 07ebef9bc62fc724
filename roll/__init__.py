"""ROLL: reinforcement-learning post-training of LLMs on Ray, Megatron-Core and SGLang.

Layout (see README "Dive into the code"): `config` (typed configs), `distributed` (Ray runtime,
the Batch record), `models` (Megatron builders, HF conversion, native inference model),
`strategies` (Megatron training, rollout engines), `algorithms` (advantages, losses),
`kernels`/`ops` (Triton and C++ hot paths), `rewards`, `envs`, `data`, `pipelines`, `cli`.
"""

__version__ = "0.1.0"
