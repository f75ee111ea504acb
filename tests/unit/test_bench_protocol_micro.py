"""benchmarks.protocol_micro: the instruction count it reads from valgrind, and one served run."""

from __future__ import annotations

import pytest

from benchmarks import protocol_micro


@pytest.mark.parametrize(
    ("stderr", "count"),
    [
        ("==1== Collected : 12\n==1== I   refs:      874,657,455\n", 874657455),
        ("==31988== I   refs:      1,070,660,362\n", 1070660362),
        ("==7== I refs: 5\n", 5),
    ],
)
def test_the_instruction_count_is_read_from_cachegrinds_summary(stderr, count):
    match = protocol_micro._IREFS.search(stderr)
    assert match is not None and int(match.group(1).replace(",", "")) == count


@pytest.mark.parametrize("class_name", [protocol_micro.NULL, "forkserve fast (worker class)"])
def test_serve_once_serves_every_request_it_is_asked_for(class_name):
    # drive() raises unless the protocol answered each request on the one kept-alive connection.
    assert protocol_micro.main(["--serve-once", class_name, "hello", "50"]) == 0
