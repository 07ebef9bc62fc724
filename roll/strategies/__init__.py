"""Strategies: the backends a worker wraps (a worker is a thin Ray shell around one of these).

Training side (Megatron-Core; actor_train, reference and critic roles):
    megatron_train.py       MegatronTrainStrategy: parallel set-up, train_step through Megatron's
                            pipeline schedules, vocab-parallel log-probs/entropy, critic values,
                            reference mode (no optimizer), HF weight export/iteration
    megatron_optim.py       DDP wrapping, distributed Adam, warm-up + constant/cosine/linear LR,
                            finite-gradient check for skipped steps
    megatron_micro.py       micro-batching of right-padded batches, token alignment of outputs
    megatron_checkpoint.py  per-rank checkpoints: model, optimizer shards, LR schedule, RNG, step
    minibatch.py            PPO epochs x mini-batches on top of a train_step

Rollout side (actor_infer): engine.py (the protocol), native_engine.py, registry.py.
"""
