"""Unit tests for roll.distributed.batch.Batch: row and field operations, errors, pickling."""

import pickle

import numpy as np
import pytest
import torch

from roll.distributed.batch import Batch


def make_batch(size: int = 6, seq: int = 5) -> Batch:
    rows = torch.arange(size)
    return Batch(
        tensors={
            "input_ids": rows[:, None] * 100 + torch.arange(seq)[None, :],
            "response_mask": (torch.arange(seq)[None, :] >= 2).float().expand(size, seq).clone(),
            "scores": rows.float() / 10,
        },
        non_tensors={"prompt": [f"p{i}" for i in range(size)], "info": [{"id": i} for i in range(size)]},
        meta={"step": 3},
    )


def row_ids(batch: Batch) -> list[int]:
    """The original row of each sample, read independently from a tensor and a non-tensor field."""
    from_tensor = (batch["input_ids"][:, 0] // 100).tolist()
    from_objects = [info["id"] for info in batch["info"]]
    assert from_tensor == from_objects
    assert list(batch["prompt"]) == [f"p{i}" for i in from_tensor]
    return from_tensor


def test_construction_accessors_and_shapes():
    batch = make_batch()
    assert len(batch) == 6
    assert batch.input_ids.shape == (6, 5) and batch.scores.shape == (6,)
    assert batch["prompt"].dtype == object and batch["prompt"].shape == (6,)
    assert "info" in batch and "values" not in batch
    with pytest.raises(KeyError, match="values"):
        _ = batch.values
    with pytest.raises(KeyError, match="nope"):
        _ = batch["nope"]


def test_per_sample_lists_stay_single_objects():
    batch = Batch(non_tensors={"turns": [[1, 2], [3, 4], [5, 6]]})
    assert batch["turns"].shape == (3,) and batch["turns"][1] == [3, 4]


def test_mismatched_leading_dim_is_rejected():
    with pytest.raises(ValueError, match=r"'scores' has leading dim 4 but the batch has 6"):
        Batch({"input_ids": torch.zeros(6, 3), "scores": torch.zeros(4)})
    batch = make_batch()
    with pytest.raises(ValueError, match="'prompt' has leading dim 2"):
        batch["prompt"] = ["a", "b"]
    with pytest.raises(TypeError, match="put batch-level values in meta"):
        Batch(non_tensors={"name": "abc"})


def test_setitem_routes_by_type():
    batch = make_batch()
    batch["advantages"] = torch.ones(6, 5)
    batch["uid"] = np.arange(6)
    assert "advantages" in batch.tensors and batch["uid"].dtype == object
    assert batch.advantages.sum() == 30
    assert batch.pop("uid")[5] == 5 and "uid" not in batch


def test_select_reorders_and_repeats():
    batch = make_batch()
    picked = batch.select([4, 1, 1, 0])
    assert row_ids(picked) == [4, 1, 1, 0]
    assert picked.scores.tolist() == pytest.approx([0.4, 0.1, 0.1, 0.0])
    assert picked.meta == {"step": 3}
    assert row_ids(batch.select(torch.tensor([True, False, False, False, False, True]))) == [0, 5]
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        batch.select([6])


def test_chunk_equal_parts_and_error():
    batch = make_batch(6)
    parts = batch.chunk(3)
    assert [row_ids(p) for p in parts] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match=r"B=6 is not divisible by k=4.*pad_to_multiple\(4\)"):
        batch.chunk(4)


def test_split_by_indices_and_concat_roundtrip():
    batch = make_batch(6)
    parts = batch.split_by_indices([[5, 0], [2], [1, 3, 4]])
    assert [row_ids(p) for p in parts] == [[5, 0], [2], [1, 3, 4]]
    merged = Batch.concat(parts)
    assert row_ids(merged) == [5, 0, 2, 1, 3, 4]
    restored = merged.select(np.argsort([5, 0, 2, 1, 3, 4]))
    assert torch.equal(restored.input_ids, batch.input_ids)


def test_concat_rejects_different_keys():
    a, b = make_batch(2), make_batch(2)
    b["values"] = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="batch 1 has fields"):
        Batch.concat([a, b])
    with pytest.raises(ValueError, match="empty list"):
        Batch.concat([])


@pytest.mark.parametrize("size,k", [(6, 4), (5, 5), (3, 8), (7, 2)])
def test_pad_repeat_then_unpad(size, k):
    batch = make_batch(size)
    padded, n_pad = batch.pad_to_multiple(k)
    assert n_pad == (k - size % k) % k and len(padded) % k == 0
    expected_pad_rows = [(size - n_pad + i) % size for i in range(n_pad)]
    assert row_ids(padded) == list(range(size)) + expected_pad_rows
    assert torch.equal(padded.unpad(n_pad).input_ids, batch.input_ids)


def test_pad_zeros():
    padded, n_pad = make_batch(5).pad_to_multiple(4, mode="zeros")
    assert n_pad == 3 and len(padded) == 8
    assert padded.input_ids[5:].abs().sum() == 0 and list(padded["prompt"][5:]) == [None] * 3
    with pytest.raises(ValueError, match="n_pad=9"):
        padded.unpad(9)


def test_union_merges_and_rejects_conflicts():
    batch = make_batch(4)
    extra = Batch({"values": torch.ones(4, 5), "scores": batch.scores.clone()}, meta={"lr": 0.1})
    merged = batch.union(extra)
    assert set(merged.keys()) == {"input_ids", "response_mask", "scores", "values", "prompt", "info"}
    assert merged.meta == {"step": 3, "lr": 0.1}
    with pytest.raises(ValueError, match="'scores' is in both batches with different values"):
        batch.union(Batch({"scores": torch.zeros(4)}))
    with pytest.raises(ValueError, match="'prompt' is in both"):
        batch.union(Batch(non_tensors={"prompt": ["x"] * 4}))
    with pytest.raises(ValueError, match="meta 'step'"):
        batch.union(Batch({"values": torch.ones(4)}, meta={"step": 4}))
    with pytest.raises(ValueError, match="sizes differ"):
        batch.union(make_batch(3))


def test_select_keys_and_to():
    batch = make_batch(3).select_keys(["input_ids", "prompt"])
    assert batch.keys() == ["input_ids", "prompt"]
    assert batch.to("cpu").input_ids.device.type == "cpu"
    with pytest.raises(KeyError, match="missing"):
        batch.select_keys(["missing"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool])
def test_pickle_roundtrip_keeps_dtype_and_values(dtype):
    source = torch.randn(4, 3).mul(3)
    tensor = source > 0 if dtype == torch.bool else source.to(dtype)
    batch = make_batch(4)
    batch["x"] = tensor.t().contiguous().t()  # non-contiguous on purpose
    for protocol in (4, 5):
        restored = pickle.loads(pickle.dumps(batch, protocol=protocol))
        assert restored["x"].dtype == dtype and torch.equal(restored["x"], tensor)
        assert row_ids(restored) == [0, 1, 2, 3] and restored.meta == {"step": 3}


def test_pickle5_sends_tensor_bytes_out_of_band():
    batch = Batch({"x": torch.randn(256, 1024).to(torch.bfloat16)})
    buffers = []
    payload = pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
    assert len(payload) < 4096 and sum(b.raw().nbytes for b in buffers) == 256 * 1024 * 2
    restored = pickle.loads(payload, buffers=buffers)
    assert torch.equal(restored["x"], batch["x"])


def test_chunk_views_pickle_only_their_rows():
    batch = Batch({"x": torch.randn(256, 1024)})
    part = batch.chunk(4)[1]
    assert part["x"].data_ptr() == batch["x"][64].data_ptr()  # a view, not a copy
    buffers = []
    payload = pickle.dumps(part, protocol=5, buffer_callback=buffers.append)
    assert sum(b.raw().nbytes for b in buffers) == 64 * 1024 * 4
    assert torch.equal(pickle.loads(payload, buffers=buffers)["x"], batch["x"][64:128])
