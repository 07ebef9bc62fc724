"""Ray actor classes, one per role: actor (train + reference), critic, infer, reward.

Importing this package (which Ray does before unpickling a worker class) silences the warnings that
megatron-core and torch print on every CPU process for missing GPU-only packages and deprecated
aliases they call internally; none of them is actionable by a ROLL user.
"""

import warnings

for _message in (
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    r"full scope is deprecated",
    r"The \.grad attribute of a Tensor that is not a leaf Tensor",
    r"`torch\.distributed\.\w+` is deprecated",
):
    warnings.filterwarnings("ignore", message=_message)
