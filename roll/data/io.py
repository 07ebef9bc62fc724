"""Row loading from .jsonl and .parquet files: malformed lines are skipped and counted, never fatal."""

import json
from pathlib import Path
from typing import Any

from roll.utils.logging import get_logger

logger = get_logger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)


def load_rows(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of a .jsonl (one JSON object per line) or .parquet file, and counts of what was skipped.

    Stats: rows (kept), malformed (lines that are not valid JSON), non_dict (valid JSON that is not
    an object). Blank lines are ignored. A missing file or an unknown suffix is a clear error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {str(path)!r} does not exist; check data.train_path / data.val_path"
        )
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"data file {str(path)!r} is not a readable parquet file ({err})") from None
        return rows, {"rows": len(rows), "malformed": 0, "non_dict": 0}
    if suffix not in JSONL_SUFFIXES:
        raise ValueError(
            f"data file {str(path)!r} has suffix {suffix!r}; supported: {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}"
        )
    rows, stats = [], {"rows": 0, "malformed": 0, "non_dict": 0}
    with path.open("rb") as f:
        for line_number, raw_line in enumerate(f, start=1):
            if not raw_line.strip():
                continue
            try:
                row = json.loads(raw_line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                stats["malformed"] += 1
                if stats["malformed"] == 1:
                    logger.warning(f"{path}:{line_number}: not valid JSON; skipping such lines (counted)")
                continue
            if not isinstance(row, dict):
                stats["non_dict"] += 1
                continue
            rows.append(row)
    stats["rows"] = len(rows)
    return rows, stats
