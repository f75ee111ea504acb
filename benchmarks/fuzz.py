"""Long differential fuzzing of forkserve's HTTP/1.1 protocols: ``python -m benchmarks.fuzz --minutes N``.

The bounded CI run is tests/protocol/test_differential.py; this runs the same generators and the
same comparison (tests/protocol/differential.py) in batches of fresh random examples until the time
is up, and writes a findings summary (JSON, and a Markdown table to stdout): how many streams were
generated, valid and mutated, per mutation how often h11 or llhttp refused what the other accepted,
and every divergence found, shrunk by Hypothesis. A divergence goes into the test module as an
``@example`` once fixed or documented (docs/http.md, "Proof of correctness").
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol.differential import compare, refusals, run_all, split
from tests.protocol.requests import mutated_stream, stream

BATCH = 200
OFFSETS = st.lists(st.integers(0, 4000), max_size=8)


def fuzz(minutes: float) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    counts: collections.Counter[str] = collections.Counter()
    strictness: collections.Counter[str] = collections.Counter()
    findings: list[dict[str, Any]] = []
    batch = settings(
        max_examples=BATCH, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )

    @batch
    @given(data=stream(), offsets=OFFSETS)
    def valid(data: bytes, offsets: list[int]) -> None:
        counts["valid"] += 1
        assert compare(run_all(loop, split(data, offsets)), strict_oracles=True) == [], data

    @batch
    @given(case=mutated_stream(), offsets=OFFSETS)
    def mutated(case: tuple[str, bytes], offsets: list[int]) -> None:
        kind, data = case
        counts["mutated"] += 1
        counts[f"mutated {kind}"] += 1
        outcomes = run_all(loop, split(data, offsets))
        for refused in refusals(outcomes):
            strictness[f"{kind}: {refused}"] += 1
        assert compare(outcomes, strict_oracles=False) == [], (kind, data)

    deadline = time.monotonic() + minutes * 60
    while time.monotonic() < deadline:
        for prop in (valid, mutated):
            try:
                prop()
            except Exception as exc:  # shrunk by Hypothesis before it reaches here
                findings.append({"property": prop.__name__, "example": repr(exc.args)[:2000]})
    loop.close()
    return {
        "minutes": minutes,
        "streams": dict(sorted(counts.items())),
        "refusal_differences": dict(sorted(strictness.items())),
        "divergences": findings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings.json"))
    args = parser.parse_args()
    summary = fuzz(args.minutes)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| what | count |\n| --- | --- |")
    for name, count in {**summary["streams"], **summary["refusal_differences"]}.items():
        print(f"| {name} | {count} |")
    print(f"| divergences | {len(summary['divergences'])} |")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
