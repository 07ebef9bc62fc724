"""`device_mapping` parsing (ints, range strings, comma lists; never eval) and its compact display."""

import pytest

from roll.config.device_mapping import format_device_ranges, parse_device_mapping
from roll.config.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([0, 1, 2], [0, 1, 2]),
        ("0-7", list(range(8))),
        (["0-3", 8, "10-11"], [0, 1, 2, 3, 8, 10, 11]),
        ("0,2,4", [0, 2, 4]),
        (" 4 - 5 ", [4, 5]),
        (3, [3]),
        (["5"], [5]),
        ([7, "0-1"], [7, 0, 1]),
    ],
)
def test_parse(value, expected):
    assert parse_device_mapping(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("__import__('os')", "cannot parse"),
        (["1+1"], "cannot parse '1+1'"),
        ("range(8)", "cannot parse 'range(8)'"),
        ([-1], "device id -1 must be >= 0"),
        ([True], "True is not a device id"),
        ("5-2", "range '5-2' is empty"),
        ([0, "0-2"], "lists devices [0] more than once"),
        ([], "is empty"),
        ("", "is empty"),
    ],
)
def test_parse_errors(value, fragment):
    with pytest.raises(ConfigError) as info:
        parse_device_mapping(value, field_name="critic.device_mapping")
    assert fragment in str(info.value)
    assert str(info.value).startswith("critic.device_mapping")


@pytest.mark.parametrize(
    "devices", [[0], list(range(64)), [0, 1, 2, 3, 8], [3, 2, 1], [5, 7, 9], [0, 1, 4, 5, 6, 10]]
)
def test_format_ranges_matches_a_loop_and_parses_back(devices):
    # Reference: group maximal runs of consecutive ids with a plain loop.
    runs: list[list[int]] = []
    for device in devices:
        if runs and device == runs[-1][-1] + 1:
            runs[-1].append(device)
        else:
            runs.append([device])
    expected = [run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]
    assert format_device_ranges(devices) == expected
    assert parse_device_mapping(expected) == devices
