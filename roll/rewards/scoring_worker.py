"""Body of a reward scoring process, run as `python -m roll.rewards.scoring_worker FD` by `RewardComputer`.

Protocol over the connection on file descriptor FD: receive [(fn, kwargs), ...] once, answer
"ready"; then, per batch, receive a list of calls (fn index, response, answer) and send back one
(score, error message or None) per call, in order; None stops the process.
"""

import contextlib
import math
import sys
from multiprocessing.connection import Connection
from typing import Any, Optional

Call = tuple[int, str, str]


def _worker_main(conn: Connection) -> None:
    """Body of a scoring process: receive the functions once, then score call lists until told to stop."""
    functions: list[tuple[Any, dict[str, Any]]] = conn.recv()
    conn.send("ready")
    while True:
        calls: Optional[list[Call]] = conn.recv()
        if calls is None:
            return
        for fn_index, response, answer in calls:
            fn, kwargs = functions[fn_index]
            try:
                score = float(fn(response, answer, **kwargs))
                if not math.isfinite(score):
                    raise ValueError(f"returned a non-finite score {score}")
                conn.send((score, None))
            except Exception as err:  # any failure of user code scores 0; the parent counts it
                conn.send((0.0, f"{type(err).__name__}: {err}"))


if __name__ == "__main__":
    with contextlib.suppress(EOFError):  # the parent went away: nothing left to score
        _worker_main(Connection(int(sys.argv[1])))
