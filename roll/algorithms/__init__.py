"""RL algorithms as pure tensor functions (no Ray, no roles).

- `advantages`: GAE, GRPO, RLOO, REINFORCE++(-baseline), token-level rewards, `compute_advantages(cfg, ...)`;
- `losses`: PPO/GSPO/CISPO policy losses, clipped value loss, KL estimators, entropy, `agg_loss`;
- `loss_fns`: actor/critic loss functions built from the AlgorithmConfig for the training strategy;
- `kl_control`: fixed and adaptive KL coefficient controllers;
- `stats`: masked mean/var, whitening, per-group statistics.
"""
