"""Rank-aware logging: `get_logger(__name__)` logs on every rank with a `[rank N]` prefix when
torch.distributed is initialised. The library never uses `print`."""

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s%(rank)s: %(message)s"


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rank = os.environ.get("RANK")
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                rank = str(dist.get_rank())
        except ImportError:
            pass
        record.rank = f" [rank {rank}]" if rank is not None else ""
        return True


def get_logger(name: str) -> logging.Logger:
    """Return a logger under the `roll` hierarchy with a rank-aware handler installed once."""
    root = logging.getLogger("roll")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_RankFilter())
        root.addHandler(handler)
        root.setLevel(os.environ.get("ROLL_LOG_LEVEL", "INFO"))
        root.propagate = False
    return logging.getLogger(name if name.startswith("roll") else f"roll.{name}")
