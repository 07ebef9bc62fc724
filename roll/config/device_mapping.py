"""Parse `device_mapping` values: a list of ints and/or range strings ("0-7"), never `eval`'d."""

import re

from roll.config.errors import ConfigError

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_INT = re.compile(r"^\s*(\d+)\s*$")


def parse_device_mapping(value, field_name: str = "device_mapping") -> list[int]:
    """Turn `[0, 1, "2-3"]`, `"0-7"` or `"0,2,4"` into a sorted-as-given list of unique ints."""
    items = value
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, int):
        items = [value]
    devices: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"{field_name}: {item!r} is not a device id; use ints or ranges like '0-7'")
        if isinstance(item, int):
            if item < 0:
                raise ConfigError(f"{field_name}: device id {item} must be >= 0")
            devices.append(item)
            continue
        text = str(item)
        if match := _INT.match(text):
            devices.append(int(match.group(1)))
        elif match := _RANGE.match(text):
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ConfigError(f"{field_name}: range {text!r} is empty (end < start); write '{hi}-{lo}'")
            devices.extend(range(lo, hi + 1))
        else:
            raise ConfigError(
                f"{field_name}: cannot parse {text!r}; use ints or range strings like '0-7' (e.g. [0, '2-3'])"
            )
    if not devices:
        raise ConfigError(f"{field_name} is empty; give at least one device, e.g. [0] or '0-7'")
    if len(set(devices)) != len(devices):
        dup = sorted({d for d in devices if devices.count(d) > 1})
        raise ConfigError(f"{field_name} lists devices {dup} more than once; list each device once")
    return devices


def format_device_ranges(devices: list[int]) -> list[int | str]:
    """Inverse of `parse_device_mapping` for display: `[0, 1, 2, 3, 8]` -> `["0-3", 8]`."""
    ranges: list[int | str] = []
    start = prev = None
    for device in [*devices, None]:
        if prev is not None and device == prev + 1:
            prev = device
            continue
        if start is not None:
            ranges.append(start if start == prev else f"{start}-{prev}")
        start = prev = device
    return ranges
