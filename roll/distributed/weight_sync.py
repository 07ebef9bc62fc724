"""Weight sync actor_train -> actor_infer: a collective transport, and the Ray object store as fallback.

Collective (`CollectiveWeightSync`): one standalone process group, built at the first sync, spans
the sending trainer ranks (TP rank 0 of DP replica 0, one per PP stage; group ranks 0..PP-1 in
stage order) and every actor_infer replica (group ranks PP..). It has its own TCPStore and a
ProcessGroupGloo (CPU) or ProcessGroupNCCL (GPU), so Megatron's default group is untouched. The
driver picks the rendezvous (the first sender's listen address and a free port there) and starts
every member's join concurrently: the group's constructor blocks until all members have joined.

One sync: PP stages send in turn. The sender of a stage streams its HF-named tensors (the TP gather
in `iter_hf_weights` is collective over its TP peers) into flat byte buckets of ~bucket_bytes and
broadcasts each bucket as three messages: (header length, buffer length), a JSON header (name,
dtype, shape, byte offset per tensor) and the buffer; a (0, 0) length pair ends the stage. Two
buffers per member: the sender fills bucket k+1 while bucket k is on the wire, an engine applies
bucket k (views into its buffer) while bucket k+1 arrives. Every member takes part in every
broadcast, so the senders of the other stages receive (and drop) a stage's buckets too.

Every group operation has the group's timeout (`weight_sync_timeout_s`), and the driver waits on all
members' calls at once: a member that raises or dies fails the sync with its role and rank.

Object store (`ObjectStoreWeightSync`): each sender `ray.put`s lists of CPU tensors and calls every
engine's `update_weights` per bucket (`ActorWorker.sync_weights`).
"""

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional, Protocol

import torch
import torch.distributed as dist

from roll.config.pipeline import WEIGHT_SYNC_TRANSPORTS
from roll.distributed.ray_runtime import free_port, node_listen_address
from roll.platform.network import bound_tcp_store
from roll.utils.logging import get_logger

logger = get_logger(__name__)

# Byte offset alignment of tensors in a bucket: `view(dtype)` of a byte slice needs the offset to be a
# multiple of the element size, and 64 keeps every tensor cache-line (and vector-load) aligned.
ALIGN = 64

NamedTensors = list[tuple[str, torch.Tensor]]
ApplyFn = Callable[[NamedTensors], Optional[Future]]


# ---------------------------------------------------------------------------------- bucket layout
@dataclass(frozen=True)
class TensorSlot:
    """Where one tensor lies in a flat byte bucket."""

    name: str
    dtype: str
    """torch dtype name without the `torch.` prefix, e.g. "bfloat16"."""
    shape: tuple[int, ...]
    offset: int
    """Byte offset in the bucket (a multiple of ALIGN)."""
    nbytes: int


def aligned(offset: int) -> int:
    """`offset` rounded up to a multiple of ALIGN."""
    return -(-offset // ALIGN) * ALIGN


def encode_header(slots: Sequence[TensorSlot]) -> bytes:
    """The bucket's metadata as JSON bytes (what receivers need to cut the buffer into tensors)."""
    rows = [[s.name, s.dtype, list(s.shape), s.offset, s.nbytes] for s in slots]
    return json.dumps(rows, separators=(",", ":")).encode()


def decode_header(data: bytes) -> list[TensorSlot]:
    """Inverse of `encode_header`."""
    return [
        TensorSlot(name=n, dtype=d, shape=tuple(shape), offset=o, nbytes=b)
        for n, d, shape, o, b in json.loads(data)
    ]


def unflatten(buffer: torch.Tensor, slots: Sequence[TensorSlot]) -> NamedTensors:
    """(name, view) pairs over the uint8 `buffer`; the views alias it (no copy)."""
    out = []
    for s in slots:
        raw = buffer[s.offset : s.offset + s.nbytes]
        out.append((s.name, raw.view(getattr(torch, s.dtype)).view(s.shape)))
    return out


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's data as a flat uint8 tensor (a view when it is contiguous)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8, device=flat.device)


# ---------------------------------------------------------------------------------- group member
def backend_for(device: torch.device) -> str:
    """The weight-update group's backend for a member computing on `device`."""
    return "nccl" if device.type == "cuda" else "gloo"


def rendezvous_endpoint(device: torch.device) -> tuple[str, int, str]:
    """(listen address, free port, backend) on the calling process's node: run on the first sender.
    The address is 127.0.0.1 in a local Ray run, else this node's chosen address."""
    address = node_listen_address()
    return address, free_port(address), backend_for(device)


class _Work(Protocol):
    def wait(self) -> Any: ...


class WeightSyncMember:
    """One rank's end of the weight-update group: `send` on a stage's sender, `receive` elsewhere.

    Constructing it joins the group (blocks until every member has joined, up to `timeout_s`).
    gloo listens on `listen_host`, by default this node's listen address (loopback in a local run).
    Buffers are kept between syncs and grow to the largest bucket seen.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        rank: int,
        world_size: int,
        timeout_s: float,
        backend: str,
        device: torch.device,
        listen_host: Optional[str] = None,
    ) -> None:
        if backend != backend_for(device):
            raise RuntimeError(
                f"weight-sync group rank {rank}: the group uses {backend} (chosen on the first sender) but "
                f"this member computes on {device}, which needs {backend_for(device)}; trainer and engines "
                "must all be on GPUs or all on the CPU (or set weight_sync_transport=object_store)"
            )
        self.rank, self.world_size, self.device = rank, world_size, device
        timeout = timedelta(seconds=timeout_s)
        if rank == 0:
            self.store = bound_tcp_store(host, port, world_size, timeout)
        else:
            self.store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
        self.pg: Any
        if backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(self.store, rank, world_size, options)
        else:
            gloo: Any = dist.ProcessGroupGloo  # its `_Options` binding is missing from torch's stubs
            options = gloo._Options()
            options._timeout = timeout
            options._devices = [gloo.create_device(hostname=listen_host or node_listen_address())]
            self.pg = gloo(self.store, rank, world_size, options)
        self._buffers: list[Optional[torch.Tensor]] = [None, None]
        logger.info("weight-sync group: joined as rank %d of %d (%s)", rank, world_size, backend)

    def _buffer(self, slot: int, nbytes: int) -> torch.Tensor:
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            buffer = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
            self._buffers[slot] = buffer
        return buffer

    def _broadcast(self, tensor: torch.Tensor, src: int) -> _Work:
        options = dist.BroadcastOptions()
        options.rootRank = src
        options.rootTensor = 0
        return self.pg.broadcast([tensor], options)

    def send(self, named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> dict[str, float]:
        """Broadcast the tensors from this rank in buckets of at most `bucket_bytes` (a larger tensor
        goes alone); returns sync/tensors, sync/bytes, sync/buckets."""
        works: list[list[_Work]] = [[], []]  # in-flight broadcasts of each buffer's bucket
        messages: list[list[torch.Tensor]] = [[], []]  # their small tensors, alive until sent
        slot, fill = 0, 0
        slots: list[TensorSlot] = []
        tensors = total = buckets = 0

        def flush() -> None:
            nonlocal slot, fill, slots, buckets
            if not slots:
                return
            header = torch.frombuffer(bytearray(encode_header(slots)), dtype=torch.uint8).to(self.device)
            lengths = torch.tensor([header.numel(), fill], dtype=torch.int64, device=self.device)
            buffer = self._buffer(slot, fill)
            messages[slot] = [lengths, header]
            works[slot] = [self._broadcast(lengths, self.rank), self._broadcast(header, self.rank)]
            if fill:
                works[slot].append(self._broadcast(buffer[:fill], self.rank))
            buckets += 1
            slot, fill, slots = slot ^ 1, 0, []
            # The other buffer is reused next: its broadcast (bucket k-1) must have left it.
            self._wait(works[slot])

        for name, tensor in named_tensors:
            data = as_bytes(tensor)
            nbytes = data.numel()
            start = aligned(fill)
            if slots and start + nbytes > bucket_bytes:
                flush()
                start = 0
            buffer = self._buffer(slot, max(start + nbytes, bucket_bytes))
            buffer[start : start + nbytes].copy_(data)
            slots.append(
                TensorSlot(name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), start, nbytes)
            )
            fill = start + nbytes
            tensors += 1
            total += nbytes
        flush()
        end = torch.zeros(2, dtype=torch.int64, device=self.device)
        self._wait([self._broadcast(end, self.rank)])
        self._wait(works[0] + works[1])
        return {"sync/tensors": float(tensors), "sync/bytes": float(total), "sync/buckets": float(buckets)}

    def receive(self, src: int, apply: Optional[ApplyFn] = None) -> int:
        """Receive group rank `src`'s buckets until its end marker; returns the number of tensors.

        `apply(named_views)` may return a Future; one bucket is applied at a time, in order, while the
        next one arrives in the other buffer (which the bucket before was applied from, so is free).
        `apply=None` drops the data.
        """
        applying: Optional[Future] = None
        slot, count = 0, 0
        while True:
            lengths = torch.empty(2, dtype=torch.int64, device=self.device)
            self._wait([self._broadcast(lengths, src)])
            header_len, nbytes = (int(v) for v in lengths.tolist())
            if header_len == 0:
                break
            header = torch.empty(header_len, dtype=torch.uint8, device=self.device)
            self._wait([self._broadcast(header, src)])
            slots = decode_header(header.cpu().numpy().tobytes())
            buffer = self._buffer(slot, nbytes)
            if nbytes:
                self._wait([self._broadcast(buffer[:nbytes], src)])
            if applying is not None:
                applying.result()
            applying = apply(unflatten(buffer, slots)) if apply is not None else None
            count += len(slots)
            slot ^= 1
        if applying is not None:
            applying.result()
        return count

    @staticmethod
    def _wait(works: list[_Work]) -> None:
        for work in works:
            work.wait()

    def close(self) -> None:
        """Leave the group (best effort: a broken group may refuse a clean shutdown)."""
        try:
            self.pg.shutdown()
        except Exception as err:  # a group whose peer died cannot always shut down cleanly
            logger.debug("weight-sync group rank %d: shutdown failed: %s", self.rank, err)
        self._buffers = [None, None]


def join_group(groups: dict[str, WeightSyncMember], name: str, **member_args: Any) -> None:
    """Join group `name` (replacing, and leaving, a previous group of that name in `groups`)."""
    old = groups.pop(name, None)
    if old is not None:
        old.close()
    groups[name] = WeightSyncMember(**member_args)


def member_of(groups: dict[str, WeightSyncMember], name: str) -> WeightSyncMember:
    """The member of group `name`; a clear error if this process never joined it."""
    if name not in groups:
        raise RuntimeError(
            f"weight-sync group {name!r} was not joined by this process (joined: {sorted(groups)}); "
            "the driver joins every member before the first sync"
        )
    return groups[name]


# ---------------------------------------------------------------------------------- driver side
class WeightSync(Protocol):
    """The driver's handle on one trainer -> engines weight sync."""

    def sync(self) -> dict[str, float]:
        """Send the trainer's current weights to every engine; returns sync/* metrics."""
        ...


def _describe(err: BaseException) -> str:
    import ray

    if isinstance(err, ray.exceptions.RayTaskError) and err.cause is not None:
        return f"raised {type(err.cause).__name__}: {err.cause}"
    if isinstance(err, ray.exceptions.RayActorError):
        return "died (its process exited) during the call"
    return f"failed: {err}"


def wait_members(calls: Sequence[tuple[Any, str, int]], grace_s: float = 2.0) -> list:
    """Results of the (ref, role, rank) calls in order; the first failure raises WorkerFailedError.

    Peers of a dead member usually fail soon after it (a broken connection); the failures seen within
    `grace_s` are reported together, deaths first, so the message names the cause.
    """
    import ray

    from roll.distributed.worker_group import WorkerFailedError

    label = {ref: (role, rank) for ref, role, rank in calls}
    pending = [ref for ref, _, _ in calls]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(ready[0])
            continue
        except Exception as err:
            failures = [(ready[0], err)]
        more, _ = ray.wait(pending, num_returns=len(pending), timeout=grace_s) if pending else ([], [])
        for ref in more:
            try:
                ray.get(ref)
            except Exception as err:
                failures.append((ref, err))
        failures.sort(key=lambda item: not isinstance(item[1], ray.exceptions.RayActorError))
        lines = [f"{label[ref][0]} rank {label[ref][1]} {_describe(err)}" for ref, err in failures]
        raise WorkerFailedError("weight sync failed: " + "; ".join(lines)) from failures[0][1]
    return ray.get([ref for ref, _, _ in calls])


class CollectiveWeightSync:
    """Trainer -> engines over a weight-update process group (see the module docstring).

    `trainer` and `engines` are WorkerGroups of ActorWorker / InferWorker (or anything with their
    weight-sync methods). The group is built at the first sync and again after a failed one.
    """

    def __init__(self, trainer: Any, engines: Any, *, bucket_bytes: int, timeout_s: float) -> None:
        self.trainer, self.engines = trainer, engines
        self.bucket_bytes, self.timeout_s = bucket_bytes, timeout_s
        self.name = f"{trainer.role}->{engines.role}:{uuid.uuid4().hex[:8]}"
        self.senders: list[int] = []
        """actor_train ranks that send, in PP stage order (group rank = index)."""
        self.ready = False

    def _senders(self) -> list[int]:
        stages = sorted(
            (info["pp_rank"], rank)
            for rank, info in enumerate(self.trainer.parallel_info)
            if info["dp_rank"] == 0 and info["tp_rank"] == 0
        )
        return [rank for _, rank in stages]

    def build(self) -> None:
        """Create the group: rendezvous on the first sender's node, all members join at once."""
        self.senders = self._senders()
        world = len(self.senders) + len(self.engines.workers)
        first = self.trainer.workers[self.senders[0]]
        host, port, backend = wait_members(
            [(first.weight_sync_endpoint.remote(), self.trainer.role, self.senders[0])]
        )[0]
        common = dict(host=host, port=port, world_size=world, timeout_s=self.timeout_s, backend=backend)
        calls = [
            (
                self.trainer.workers[rank].join_weight_sync.remote(self.name, rank=i, **common),
                self.trainer.role,
                rank,
            )
            for i, rank in enumerate(self.senders)
        ]
        offset = len(self.senders)
        calls += [
            (worker.join_weight_sync.remote(self.name, rank=offset + i, **common), self.engines.role, i)
            for i, worker in enumerate(self.engines.workers)
        ]
        wait_members(calls)
        self.ready = True
        logger.info(
            "weight-sync group %s: %d sender(s) + %d engine(s) on %s:%d (%s)",
            self.name, len(self.senders), len(self.engines.workers), host, port, backend,
        )  # fmt: skip

    def sync(self) -> dict[str, float]:
        """Every PP stage's sender broadcasts its weights in turn; returns sync/* metrics (tensors,
        bytes and buckets summed over stages; time/sync_send, the slowest sender's seconds)."""
        try:
            if not self.ready:
                self.build()
            sources = list(range(len(self.senders)))
            trainer_refs = self.trainer.call_async(
                "sync_weights_collective", self.name, sources, self.bucket_bytes
            )
            engine_refs = self.engines.call_async("receive_weights", self.name, sources)
            calls = [(ref, self.trainer.role, rank) for rank, ref in enumerate(trainer_refs)]
            calls += [(ref, self.engines.role, rank) for rank, ref in enumerate(engine_refs)]
            results = wait_members(calls)
        except Exception:
            self.ready = False  # the group may be broken: the next sync builds a fresh one
            raise
        sent, received = results[: len(trainer_refs)], results[len(trainer_refs) :]
        metrics = _sum_metrics(sent)
        for rank, count in enumerate(received):
            if count != metrics["sync/tensors"]:
                raise RuntimeError(
                    f"weight sync: {self.engines.role} rank {rank} received {count} tensors but the "
                    f"senders sent {metrics['sync/tensors']:g}"
                )
        self.engines.call("finish_weight_update")
        return metrics


class ObjectStoreWeightSync:
    """Trainer -> engines through the Ray object store (ActorWorker.sync_weights): the fallback."""

    def __init__(self, trainer: Any, engines: Any, *, bucket_bytes: int) -> None:
        self.trainer, self.engines, self.bucket_bytes = trainer, engines, bucket_bytes

    def sync(self) -> dict[str, float]:
        """Every sender puts its buckets and waits for every engine to load each one."""
        sent = self.trainer.call("sync_weights", self.engines.workers, self.bucket_bytes)
        self.engines.call("finish_weight_update")
        return _sum_metrics(sent)


def _sum_metrics(per_rank: Sequence[dict[str, float]]) -> dict[str, float]:
    """Metrics of all trainer ranks: sync/* counts summed, time/sync_send of the slowest rank (a
    wall-clock figure, so under time/ with the pipeline's other timings)."""
    metrics = {
        name: float(sum(rank.get(name, 0.0) for rank in per_rank))
        for name in ("sync/tensors", "sync/bytes", "sync/buckets")
    }
    metrics["time/sync_send"] = max((rank.get("time/sync_send", 0.0) for rank in per_rank), default=0.0)
    return metrics


def make_weight_sync(
    transport: str, trainer: Any, engines: Any, *, bucket_bytes: int, timeout_s: float
) -> WeightSync:
    """The weight sync of `transport` (collective | object_store) between two WorkerGroups."""
    if transport == "collective":
        return CollectiveWeightSync(trainer, engines, bucket_bytes=bucket_bytes, timeout_s=timeout_s)
    if transport == "object_store":
        return ObjectStoreWeightSync(trainer, engines, bucket_bytes=bucket_bytes)
    raise ValueError(f"weight_sync_transport={transport!r} is not one of {'|'.join(WEIGHT_SYNC_TRANSPORTS)}")
