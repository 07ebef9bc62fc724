"""The Batch record passed between the driver and the role workers.

A `Batch` holds B samples as three groups of fields:

- `tensors`: torch tensors sharing the leading dim B, e.g. (B, S) or (B,);
- `non_tensors`: per-sample Python objects (prompt text, ids, env dicts) as numpy object arrays (B, ...);
- `meta`: batch-level values (step, generation config, metrics), copied along by every operation.

Tensor conventions (shared by every role):

- Sequences are RIGHT-padded. `input_ids` (B, S) int64 = prompt tokens, then response tokens, then pad;
  `attention_mask` (B, S) int64 is 1 on real tokens; `position_ids` (B, S) = arange(S) per row.
- `response_mask` (B, S) float32 is 1.0 on tokens produced by the policy (actions); in multi-turn
  rollouts the env/tool tokens between turns are 0.
- Per-token tensors are (B, S) float32 aligned with `input_ids`: `x[:, i]` refers to token
  `input_ids[:, i]`. `old_log_probs[:, i] = log p(input_ids[:, i] | input_ids[:, :i])` (column 0 is 0),
  likewise `ref_log_probs`; `values[:, i]` is V(prefix before token i) (column 0 is 0);
  `advantages`, `returns`, `token_level_rewards` likewise.
- `scores` (B,) float32 is the sequence-level reward; `group_index` (B,) int64 the prompt a response
  came from.

Pickling (and so Ray transport) sends tensors as numpy arrays, which Ray's pickle-5 serializer writes
out-of-band into the object store without intermediate byte copies; dtypes numpy lacks (bfloat16,
float8) travel as same-width integer views. Received tensors are always CPU tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

Indices = Union[Sequence[int], np.ndarray, torch.Tensor]

# numpy has no such dtypes: they are pickled as same-width integer views and viewed back on load.
_INT_VIEW_BY_ITEMSIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NUMPY_LACKS = {
    torch.bfloat16,
    *(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)),
}


class Batch:
    """B samples: tensors with a shared leading dim, per-sample objects and batch-level meta."""

    def __init__(
        self,
        tensors: Optional[dict[str, torch.Tensor]] = None,
        non_tensors: Optional[dict[str, Any]] = None,
        meta: Optional[dict[str, Any]] = None,
    ) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.non_tensors: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = dict(meta or {})
        self._size: Optional[int] = None
        for key, value in (tensors or {}).items():
            self._set_tensor(key, value)
        for key, value in (non_tensors or {}).items():
            self._set_non_tensor(key, value)

    @classmethod
    def from_dict(cls, fields: dict[str, Any], meta: Optional[dict[str, Any]] = None) -> Batch:
        """Build a Batch from one dict: torch tensors become `tensors`, everything else `non_tensors`."""
        tensors = {k: v for k, v in fields.items() if isinstance(v, torch.Tensor)}
        others = {k: v for k, v in fields.items() if not isinstance(v, torch.Tensor)}
        return cls(tensors, others, meta)

    # ----- fields -----

    def _check_size(self, key: str, size: int) -> None:
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(
                f"Batch field {key!r} has leading dim {size} but the batch has {self._size} samples; "
                "every tensor and non-tensor field must share the leading dim B"
            )

    def _set_tensor(self, key: str, value: torch.Tensor) -> None:
        if value.dim() == 0:
            raise ValueError(f"Batch tensor {key!r} is 0-dim; per-sample tensors need a leading dim B")
        self._check_size(key, value.shape[0])
        self.non_tensors.pop(key, None)
        self.tensors[key] = value

    def _set_non_tensor(self, key: str, value: Any) -> None:
        array = _as_object_array(key, value)
        self._check_size(key, array.shape[0])
        self.tensors.pop(key, None)
        self.non_tensors[key] = array

    def __len__(self) -> int:
        return self._size or 0

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.non_tensors

    def keys(self) -> list[str]:
        """Names of all per-sample fields (tensors first)."""
        return [*self.tensors, *self.non_tensors]

    def __getitem__(self, key: str) -> Union[torch.Tensor, np.ndarray]:
        if key in self.tensors:
            return self.tensors[key]
        if key in self.non_tensors:
            return self.non_tensors[key]
        raise KeyError(f"Batch has no field {key!r}; fields: {self.keys()}")

    def __setitem__(self, key: str, value: Any) -> None:
        """Add or replace a field: a tensor goes to `tensors`, anything else to `non_tensors`."""
        if isinstance(value, torch.Tensor):
            self._set_tensor(key, value)
        else:
            self._set_non_tensor(key, value)

    def pop(self, key: str) -> Union[torch.Tensor, np.ndarray]:
        """Remove a field and return it."""
        value = self[key]
        self.tensors.pop(key, None)
        self.non_tensors.pop(key, None)
        return value

    def __repr__(self) -> str:
        tensors = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self.tensors.items())
        non_tensors = ", ".join(self.non_tensors)
        return f"Batch(B={len(self)}, tensors={{{tensors}}}, non_tensors=[{non_tensors}], meta={list(self.meta)})"

    # ----- typed accessors for the common fields -----

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, S) int64: prompt tokens, then response tokens, then right padding."""
        return self._tensor("input_ids")

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, S) int64: 1 on real (non-pad) tokens."""
        return self._tensor("attention_mask")

    @property
    def position_ids(self) -> torch.Tensor:
        """(B, S) int64: arange(S) per row."""
        return self._tensor("position_ids")

    @property
    def response_mask(self) -> torch.Tensor:
        """(B, S) float32: 1.0 on policy-generated tokens (actions), 0 on prompt, env tokens and pad."""
        return self._tensor("response_mask")

    @property
    def old_log_probs(self) -> torch.Tensor:
        """(B, S) float32: log-prob of token i under the rollout-time policy (column 0 is 0)."""
        return self._tensor("old_log_probs")

    @property
    def ref_log_probs(self) -> torch.Tensor:
        """(B, S) float32: log-prob of token i under the reference model (column 0 is 0)."""
        return self._tensor("ref_log_probs")

    @property
    def values(self) -> torch.Tensor:
        """(B, S) float32: critic value of the prefix before token i (column 0 is 0)."""
        return self._tensor("values")

    @property
    def advantages(self) -> torch.Tensor:
        """(B, S) float32: advantage of token i (0 outside the response mask)."""
        return self._tensor("advantages")

    @property
    def returns(self) -> torch.Tensor:
        """(B, S) float32: return target of token i (0 outside the response mask)."""
        return self._tensor("returns")

    @property
    def scores(self) -> torch.Tensor:
        """(B,) float32: sequence-level reward."""
        return self._tensor("scores")

    def _tensor(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise KeyError(f"Batch has no tensor {key!r}; tensors: {list(self.tensors)}")
        return self.tensors[key]

    # ----- row operations -----

    def select(self, indices: Indices) -> Batch:
        """A new Batch with the rows at `indices`, in that order (repeats allowed)."""
        size = len(self)
        index = _as_index_tensor(indices, size)
        np_index = index.numpy()
        tensors = {k: v[index.to(v.device)] for k, v in self.tensors.items()}
        non_tensors = {k: v[np_index] for k, v in self.non_tensors.items()}
        return self._like(tensors, non_tensors)

    def chunk(self, k: int) -> list[Batch]:
        """Split into k equal consecutive parts (views, no copy); B must be divisible by k."""
        size = len(self)
        if k < 1:
            raise ValueError(f"Batch.chunk: k={k} must be >= 1")
        if size % k != 0:
            raise ValueError(
                f"Batch.chunk: B={size} is not divisible by k={k}; "
                f"call batch.pad_to_multiple({k}) first and unpad the result"
            )
        part = size // k
        return [self._rows(i * part, (i + 1) * part) for i in range(k)]

    def _rows(self, start: int, stop: int) -> Batch:
        """Consecutive rows as views (no copy)."""
        tensors = {k: v[start:stop] for k, v in self.tensors.items()}
        return self._like(tensors, {k: v[start:stop] for k, v in self.non_tensors.items()})

    def split_by_indices(self, index_lists: Sequence[Sequence[int]]) -> list[Batch]:
        """One Batch per index list (e.g. the sequence-balanced assignment of rows to DP ranks)."""
        return [self.select(list(indices)) for indices in index_lists]

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Stack batches with identical field names row-wise; meta is taken from the first batch."""
        if not batches:
            raise ValueError("Batch.concat: got an empty list of batches")
        first = batches[0]
        for i, other in enumerate(batches[1:], start=1):
            if set(other.tensors) != set(first.tensors) or set(other.non_tensors) != set(first.non_tensors):
                raise ValueError(
                    f"Batch.concat: batch {i} has fields {sorted(other.keys())} but batch 0 has "
                    f"{sorted(first.keys())}; select_keys() a common set before concatenating"
                )
        tensors = {k: torch.cat([b.tensors[k] for b in batches]) for k in first.tensors}
        non_tensors = {k: np.concatenate([b.non_tensors[k] for b in batches]) for k in first.non_tensors}
        return first._like(tensors, non_tensors)

    def pad_to_multiple(self, k: int, mode: str = "repeat") -> tuple[Batch, int]:
        """Append n_pad rows so that B + n_pad is divisible by k; returns (padded batch, n_pad).

        mode="repeat" copies the last rows (cycling when B < n_pad), so padded rows are valid inputs;
        mode="zeros" appends zero tensors and None objects. Nothing marks the padded rows: keep n_pad
        and call `unpad(n_pad)` on the result.
        """
        size = len(self)
        if k < 1:
            raise ValueError(f"Batch.pad_to_multiple: k={k} must be >= 1")
        n_pad = -size % k
        if n_pad == 0:
            return self, 0
        if mode == "repeat":
            if size == 0:
                raise ValueError(
                    "Batch.pad_to_multiple: cannot repeat rows of an empty batch; use mode='zeros'"
                )
            return Batch.concat([self, self.select(np.arange(size - n_pad, size) % size)]), n_pad
        if mode == "zeros":
            tensors = {name: v.new_zeros((n_pad, *v.shape[1:])) for name, v in self.tensors.items()}
            non_tensors = {
                name: np.full((n_pad, *v.shape[1:]), None, dtype=object)
                for name, v in self.non_tensors.items()
            }
            return Batch.concat([self, self._like(tensors, non_tensors)]), n_pad
        raise ValueError(f"Batch.pad_to_multiple: mode={mode!r} is not one of repeat|zeros")

    def unpad(self, n_pad: int) -> Batch:
        """Drop the last n_pad rows (a view; the inverse of `pad_to_multiple`)."""
        size = len(self)
        if not 0 <= n_pad <= size:
            raise ValueError(f"Batch.unpad: n_pad={n_pad} must be in [0, B={size}]")
        return self if n_pad == 0 else self._rows(0, size - n_pad)

    # ----- field operations -----

    def union(self, other: Batch) -> Batch:
        """A new Batch with the fields and meta of both; shared keys must hold equal values."""
        if len(self) != len(other) and self.keys() and other.keys():
            raise ValueError(f"Batch.union: batch sizes differ ({len(self)} vs {len(other)})")
        tensors = dict(self.tensors)
        for key, tensor in other.tensors.items():
            if key in self.non_tensors or (key in tensors and not _tensors_equal(tensors[key], tensor)):
                raise ValueError(f"Batch.union: field {key!r} is in both batches with different values")
            tensors[key] = tensor
        non_tensors = dict(self.non_tensors)
        for key, array in other.non_tensors.items():
            if key in self.tensors or (key in non_tensors and not _objects_equal(non_tensors[key], array)):
                raise ValueError(f"Batch.union: field {key!r} is in both batches with different values")
            non_tensors[key] = array
        meta = dict(self.meta)
        for key, value in other.meta.items():
            if key in meta and not _values_equal(meta[key], value):
                raise ValueError(f"Batch.union: meta {key!r} is in both batches with different values")
            meta[key] = value
        return Batch(tensors, non_tensors, meta)

    def select_keys(self, keys: Iterable[str]) -> Batch:
        """A new Batch with only the named fields (e.g. to send a worker only what it reads)."""
        keys = list(keys)
        missing = [k for k in keys if k not in self]
        if missing:
            raise KeyError(f"Batch.select_keys: no fields {missing}; fields: {self.keys()}")
        tensors = {k: v for k, v in self.tensors.items() if k in keys}
        non_tensors = {k: v for k, v in self.non_tensors.items() if k in keys}
        return self._like(tensors, non_tensors)

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> Batch:
        """A new Batch whose tensors are on `device` (non-tensors and meta are shared)."""
        tensors = {k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors.items()}
        return self._like(tensors, self.non_tensors)

    def items(self) -> Iterator[tuple[str, Union[torch.Tensor, np.ndarray]]]:
        """(name, value) for every per-sample field."""
        yield from self.tensors.items()
        yield from self.non_tensors.items()

    def _like(self, tensors: dict[str, torch.Tensor], non_tensors: dict[str, np.ndarray]) -> Batch:
        return Batch(tensors, non_tensors, self.meta)

    # ----- pickling (Ray transport) -----

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        tensors = {k: _tensor_to_numpy(v) for k, v in self.tensors.items()}
        return _batch_from_state, (tensors, self.non_tensors, self.meta)


def _batch_from_state(
    tensors: dict[str, tuple[np.ndarray, Optional[str]]], non_tensors: dict[str, np.ndarray], meta: dict
) -> Batch:
    return Batch({k: _tensor_from_numpy(*v) for k, v in tensors.items()}, non_tensors, meta)


def _tensor_to_numpy(tensor: torch.Tensor) -> tuple[np.ndarray, Optional[str]]:
    """A numpy array sharing the (CPU, contiguous) tensor's memory, and the torch dtype it stands for."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype in _NUMPY_LACKS:
        view_dtype = _INT_VIEW_BY_ITEMSIZE[tensor.element_size()]
        return tensor.view(view_dtype).numpy(), str(tensor.dtype).removeprefix("torch.")
    return tensor.numpy(), None


def _tensor_from_numpy(array: np.ndarray, torch_dtype: Optional[str]) -> torch.Tensor:
    # Ray hands out read-only views of the shared object store; writing through them would corrupt the
    # object for every other reader, so such arrays are copied once into private memory.
    if not array.flags.writeable:
        array = array.copy()
    tensor = torch.from_numpy(array)
    return tensor.view(getattr(torch, torch_dtype)) if torch_dtype else tensor


def _as_object_array(key: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            raise ValueError(f"Batch non-tensor {key!r} is 0-dim; per-sample fields need a leading dim B")
        return value if value.dtype == object else value.astype(object)
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise TypeError(
            f"Batch non-tensor {key!r} must be a list or numpy array with one entry per sample, "
            f"got {type(value).__name__}; put batch-level values in meta"
        )
    items = list(value)
    # Filled element-wise so that lists/tuples per sample stay single objects rather than a 2-D array.
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _as_index_tensor(indices: Indices, size: int) -> torch.Tensor:
    """Row indices as a 1-D int64 CPU tensor; a boolean mask of length B selects its True rows."""
    index = (
        indices.detach().cpu() if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
    )
    index = index.reshape(-1)
    if index.dtype == torch.bool:
        if index.numel() != size:
            raise IndexError(
                f"Batch.select: boolean mask has {index.numel()} entries for a batch of B={size}"
            )
        return index.nonzero().reshape(-1)
    if index.numel() == 0:
        return index.to(torch.int64)
    if index.is_floating_point():
        raise TypeError(f"Batch.select: indices must be integers, got {index.dtype}")
    if int(index.min()) < -size or int(index.max()) >= size:
        raise IndexError(f"Batch.select: indices must be in [0, {size}) for a batch of B={size}")
    return index.to(torch.int64)


def _tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())


def _objects_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and all(_values_equal(x, y) for x, y in zip(a.reshape(-1), b.reshape(-1)))


def _values_equal(x: Any, y: Any) -> bool:
    if x is y:
        return True
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and _tensors_equal(x, y)
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return bool(np.array_equal(x, y))
    try:
        return bool(x == y)
    except (RuntimeError, ValueError):  # containers holding tensors/arrays have no single truth value
        return False
