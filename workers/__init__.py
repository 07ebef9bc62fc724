"""Ray actor classes, one per role: actor (train + reference), infer, critic, reward."""
