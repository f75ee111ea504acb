"""What the security settings cost per request: ``python -m benchmarks.security_overhead``.

Serves benchmarks.apps:app with one forkserve worker in several configurations (plain, with
--secure-headers, with --limit-max-request-size, with both, over TLS), interleaved round by round
so a noisy neighbour hits every variant alike, and writes the medians into docs/security.md
between its benchmark markers. Ratios to "plain" are the figures to read; absolute numbers depend
on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import harness

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "security.md"
START = "<!-- security-benchmark:start -->"
END = "<!-- security-benchmark:end -->"

VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "--secure-headers": ["--secure-headers"],
    "--limit-max-request-size 1M": ["--limit-max-request-size", "1M"],
    "both": ["--secure-headers", "--limit-max-request-size", "1M"],
}


def _wrk_https(port: int, threads: int, connections: int, duration: int) -> harness.WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        f"https://127.0.0.1:{port}/",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise harness.ServerError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return harness.parse_wrk(done.stdout)


def measure(name: str, extra: list[str], args: argparse.Namespace, work: Path) -> harness.WrkResult:
    port = harness.free_port()
    command = [
        sys.executable, "-m", "forkserve", "benchmarks.apps:app", "-w", "1",
        "-b", f"127.0.0.1:{port}", "--no-access-log", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = harness.start_server(command, ROOT, env, work / f"{name.replace(' ', '_')}.log")
    try:
        if "--certfile" in extra:
            harness.wait_for_workers(proc.pid, 3, 30)
        else:
            harness.wait_until_serving(proc, port, 30)
            harness.wait_for_workers(proc.pid, 3, 30)
        run = _wrk_https if "--certfile" in extra else harness.run_wrk
        run(port, args.threads, args.connections, 1)  # warm-up, not recorded
        return run(port, args.threads, args.connections, args.duration)
    finally:
        _stopped, problems = harness.stop_and_check(proc, port, 10)
        if problems:
            raise harness.ServerError(f"{name}: {problems}")


def tls_variant(work: Path) -> list[str]:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = work / "cert.pem", work / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return ["--certfile", str(cert), "--keyfile", str(key)]


def render(results: dict[str, list[harness.WrkResult]], args: argparse.Namespace) -> str:
    plain = statistics.median(r.requests_per_sec for r in results["plain"])
    lines = [
        START,
        f"One worker, `wrk -t{args.threads} -c{args.connections} -d{args.duration}s`, "
        f"{args.rounds} interleaved rounds, medians; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (shared with other work while measured: "
        "read the ratios). Produced by `python -m benchmarks.security_overhead`.",
        "",
        "| configuration | req/s | vs plain | p99 ms | errors + non-2xx |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        rps = statistics.median(r.requests_per_sec for r in runs)
        p99 = statistics.median(r.latency_ms["99"] for r in runs)
        bad = sum(r.socket_errors + r.non_2xx for r in runs)
        lines.append(f"| {name} | {rps:,.0f} | {rps / plain:.2f} | {p99:.1f} | {bad} |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.security_overhead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        variants = {**VARIANTS, "TLS (--certfile)": tls_variant(work)}
        results: dict[str, list[harness.WrkResult]] = {name: [] for name in variants}
        names = list(variants)
        for round_number in range(args.rounds):
            for name in harness.rotated(names, round_number + 1):
                result = measure(name, variants[name], args, work)
                results[name].append(result)
                print(f"round {round_number + 1} {name}: {result.requests_per_sec:,.0f} req/s", flush=True)
    section = render(results, args)
    text = args.output.read_text(encoding="utf-8")
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    args.output.write_text(before + section + after, encoding="utf-8")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
