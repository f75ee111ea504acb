"""benchmarks.ws_throughput's pure parts: the hand-made frames and handshake of its client (checked
against the websockets library as an independent oracle), and the figures and page of its runner.
"""

from __future__ import annotations

from array import array
from collections.abc import Generator
from typing import Any

import pytest
from websockets.frames import Frame as OracleFrame
from websockets.frames import Opcode
from websockets.streams import StreamReader

from benchmarks import ws_client, ws_throughput
from benchmarks.failures import Failure, RequestFailed
from benchmarks.ws_throughput import CycleRun, EchoRun, ServerRun

MASK = b"\x12\x34\xab\xcd"
SIZES = [0, 1, 125, 126, 65535, 65536]


def _oracle_parse(data: bytes, mask: bool) -> OracleFrame:
    reader = StreamReader()
    reader.feed_data(data)
    parser: Generator[None, None, OracleFrame] = OracleFrame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("the oracle wanted more bytes")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode", [ws_client.TEXT, ws_client.BINARY])
def test_client_frames_are_what_a_server_reads(size: int, opcode: int) -> None:
    payload = ws_client.payload_of(size)
    frame = _oracle_parse(ws_client.client_frame(opcode, payload, MASK), mask=True)
    assert (frame.opcode, bytes(frame.data), frame.fin) == (Opcode(opcode), payload, True)


@pytest.mark.parametrize("size", SIZES)
def test_server_frames_parse_as_the_oracle_serialises_them(size: int) -> None:
    payload = ws_client.payload_of(size)
    wire = OracleFrame(Opcode.BINARY, payload).serialize(mask=False)
    assert wire == ws_client.server_frame(ws_client.BINARY, payload)
    assert ws_client.parse_frame(wire) == ws_client.Frame(True, ws_client.BINARY, payload, len(wire))
    # Every strict prefix is incomplete, never an error.
    for cut in {0, 1, 2, 3, 9, len(wire) - 1} - {len(wire)}:
        if 0 <= cut < len(wire):
            assert ws_client.parse_frame(wire[:cut]) is None


def test_frames_are_read_in_sequence_from_an_offset() -> None:
    wire = (
        ws_client.server_frame(ws_client.TEXT, b"ab", fin=False)
        + ws_client.server_frame(ws_client.PING, b"p")
        + ws_client.server_frame(ws_client.CONT, b"cd")
    )
    first = ws_client.parse_frame(wire)
    assert first is not None and (first.fin, first.opcode, first.payload) == (False, ws_client.TEXT, b"ab")
    second = ws_client.parse_frame(wire, first.end)
    assert second is not None and (second.opcode, second.payload) == (ws_client.PING, b"p")
    third = ws_client.parse_frame(wire, second.end)
    assert third is not None and (third.fin, third.opcode, third.payload, third.end) == (
        True,
        ws_client.CONT,
        b"cd",
        len(wire),
    )


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"\xc1\x00", "reserved bits"),  # RSV1: compression, which was never offered
        (b"\x83\x00", "unknown opcode"),
        (b"\x81\x81" + MASK + b"x", "masked frame"),
        (b"\x89\x7e\x00\x7e" + b"x" * 126, "control frame"),  # a ping over 125 bytes
        (b"\x09\x00", "control frame"),  # a fragmented ping
        (b"\x82\x7f" + (1 << 40).to_bytes(8, "big"), "frame of"),
    ],
)
def test_frames_a_server_must_not_send(wire: bytes, why: str) -> None:
    with pytest.raises(RequestFailed, match=why) as raised:
        ws_client.parse_frame(wire)
    assert raised.value.failure is Failure.BAD_RESPONSE


def test_accept_value_is_rfc_6455s_example() -> None:
    assert ws_client.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)


@pytest.mark.parametrize(
    ("head", "failure", "detail"),
    [
        (GOOD, None, ""),
        (GOOD.replace("Upgrade\r\nSec", "keep-alive, upgrade\r\nSec"), None, ""),
        ("HTTP/1.1 403 Forbidden\r\nContent-Length: 0", Failure.BAD_STATUS, "403"),
        ("SSH-2.0-OpenSSH", Failure.BAD_RESPONSE, "not an HTTP response"),
        (GOOD.replace("Upgrade: websocket\r\n", ""), Failure.BAD_RESPONSE, "Upgrade"),
        (GOOD.replace("Connection: Upgrade", "Connection: close"), Failure.BAD_RESPONSE, "Connection"),
        (GOOD.replace("s3pP", "AAAA"), Failure.BAD_RESPONSE, "Accept"),
        (GOOD + "\r\nSec-WebSocket-Extensions: permessage-deflate", Failure.BAD_RESPONSE, "extension"),
    ],
)
def test_check_handshake(head: str, failure: Failure | None, detail: str) -> None:
    if failure is None:
        ws_client.check_handshake(head.encode(), KEY)
        return
    with pytest.raises(RequestFailed, match=detail) as raised:
        ws_client.check_handshake(head.encode(), KEY)
    assert raised.value.failure is failure


def test_the_handshake_request_asks_for_an_upgrade_without_extensions() -> None:
    request = ws_client.handshake_request("127.0.0.1", 8000, KEY).decode()
    assert request.startswith("GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n") and request.endswith("\r\n\r\n")
    assert f"Sec-WebSocket-Key: {KEY}\r\n" in request and "Extensions" not in request


@pytest.mark.parametrize("size", [0, 1, 64, 16384])
def test_payloads_are_printable_ascii_of_the_size(size: int) -> None:
    payload = ws_client.payload_of(size)
    assert len(payload) == size and payload.decode("ascii").isprintable()
    assert size < 2 or len(set(payload)) > 1


def test_window_counts_only_echoes_inside_it() -> None:
    window = ws_client.Window(start=10.0, stop=20.0)
    for now in (9.99, 10.0, 15.0, 19.99, 20.0):
        window.echoed(now, 0.001)
    assert window.messages == 3 and list(window.rtts) == [0.001] * 3


@pytest.mark.parametrize(
    ("total", "parts", "shares"),
    [(64, 2, [32, 32]), (5, 2, [3, 2]), (7, 3, [3, 2, 2]), (1, 3, [1, 0, 0])],
)
def test_split(total: int, parts: int, shares: list[int]) -> None:
    assert ws_throughput.split(total, parts) == shares


def _load_reply(
    messages: int, rtt: float, cpu: float, failures: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "messages": messages,
        "rtts": array("d", [rtt] * messages).tobytes(),
        "failures": failures or {},
        "cpu": cpu,
    }


def test_echo_figures_sum_the_processes() -> None:
    replies = [_load_reply(300, 0.001, 0.5), _load_reply(100, 0.003, 0.3, {"timeout": 1})]
    run = ws_throughput.echo_figures(64, replies, seconds=2.0, server_cpu=1.0, cpus=2)
    assert run.messages == 400 and run.messages_per_sec == 200.0
    assert run.p50_ms == pytest.approx(1.0) and run.p99_ms == pytest.approx(3.0)
    assert run.server_cpu_us == pytest.approx(2500.0)  # 1 s of server CPU over 400 messages
    assert run.server_share == pytest.approx(0.25) and run.client_share == pytest.approx(0.2)
    assert run.client_busiest == pytest.approx(0.25)  # 0.5 s of one core over 2 s
    assert run.failures == {"timeout": 1}


def test_cycle_figures_time_from_the_start_to_the_last_close() -> None:
    def reply(cycles: int, setup: float, last: float, failures: dict[str, int], cpu: float) -> dict[str, Any]:
        setups = array("d", [setup] * cycles).tobytes()
        return {"cycles": cycles, "setups": setups, "last": last, "failures": failures, "cpu": cpu}

    replies = [reply(10, 0.002, 101.0, {}, 0.1), reply(5, 0.004, 102.0, {"reset": 2}, 0.2)]
    run = ws_throughput.cycle_figures(replies, start=100.0, server_cpu=0.03, cpus=2)
    assert run.cycles == 15 and run.handshakes_per_sec == pytest.approx(7.5)
    assert run.p99_ms == pytest.approx(4.0) and run.server_cpu_us == pytest.approx(2000.0)
    assert run.failures == {"reset": 2}


def _record(server: str, round_no: int, rate: float, cpu_us: float, error: str | None = None) -> ServerRun:
    echo = [
        EchoRun(64, messages_per_sec=rate, p50_ms=1.0, p99_ms=2.0, server_cpu_us=cpu_us, error=error),
        EchoRun(16384, messages_per_sec=rate / 2, p50_ms=2.0, p99_ms=4.0, server_cpu_us=cpu_us * 2),
    ]
    cycles = CycleRun(handshakes_per_sec=rate / 10, p50_ms=3.0, p99_ms=6.0, cycles=100, server_cpu_us=400.0)
    return ServerRun(round_no, server, 0, echo=echo, cycles=cycles)


RECORDS = [
    _record("forkserve", 1, 3000.0, 20.0),
    _record("uvicorn", 1, 2000.0, 25.0),
    _record("forkserve", 2, 3300.0, 21.0),
    _record("uvicorn", 2, 2200.0, 24.0),
    _record("forkserve", 3, 1.0, 99.0, error="connections did not open"),  # out of the medians
    _record("uvicorn", 3, 2100.0, 26.0),
]


def test_rows_are_medians_of_the_runs_that_worked_with_the_ratio_to_uvicorn() -> None:
    forkserve, uvicorn = ws_throughput.echo_rows(RECORDS, ["forkserve", "uvicorn"], 64)
    assert (forkserve.value, forkserve.ok, forkserve.runs) == (3150.0, 2, 3)
    assert uvicorn.value == 2100.0 and uvicorn.ratio == 1.0
    assert forkserve.ratio == pytest.approx(1.5) and forkserve.server_cpu_us == pytest.approx(20.5)
    cycles = {row.server: row for row in ws_throughput.cycle_rows(RECORDS, ["forkserve", "uvicorn"])}
    # The third round's handshakes worked (only its messages failed): median of 300, 330 and 0.1.
    assert cycles["forkserve"].value == pytest.approx(300.0) and cycles["forkserve"].ok == 3


def test_rows_without_the_baseline_have_no_ratio() -> None:
    (row,) = ws_throughput.echo_rows(RECORDS, ["forkserve"], 64)
    assert row.ratio is None


def _meta() -> dict[str, Any]:
    args = ws_throughput.parse_args(["--quick", "--servers", "forkserve,uvicorn"])
    return {
        "command": "python -m benchmarks.ws_throughput --quick",
        "date": "2026-01-01 00:00 UTC",
        "machine": "2 CPUs (test), Linux 6",
        "cpus": 2,
        "versions": {"forkserve": "0.1.0", "uvicorn": "0.1", "granian": None},
        "servers": {n: {"command": f"python -m {n} ...", "ws": "websockets-sansio"} for n in args.names},
        "servers_order": args.names,
        "settings": {
            "rounds": 3, "duration": 2.0, "warmup": 1.0, "connections": 64, "sizes": [64, 16384],
            "binary": False, "processes": 2, "cycles": 300, "cycle_concurrency": 16, "workers": 2,
        },
    }  # fmt: skip


def test_the_page_has_a_table_per_size_the_handshakes_and_every_run() -> None:
    page = ws_throughput.render(_meta(), RECORDS, "\nkept by hand\n")
    assert "## 64 B messages, 64 connections" in page and "## 16 KiB messages, 64 connections" in page
    assert "| forkserve | 3,150 | 1.50 |" in page and "| uvicorn | 2,100 | 1.00 |" in page
    assert "## Handshakes (300 connect/close cycles, 16 at a time)" in page
    assert "round 3  forkserve" in page and "failed: connections did not open" in page
    assert "granian None" not in page  # absent packages are left out of the versions
    assert page.endswith(ws_throughput.NOTES_MARKER + "\nkept by hand\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "64,big"], "--sizes takes a comma list"),
        (["--sizes", "0"], "at least one size"),
        (["--servers", "forkserve,nginx"], "unknown server"),
        (["--connections", "1", "--processes", "2"], "must be at least --processes"),
        (["--cycles", "0"], "must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        ws_throughput.parse_args(argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_quick_is_one_short_round() -> None:
    args = ws_throughput.parse_args(["--quick"])
    assert (args.rounds, args.warmup, args.duration, args.cycles) == (1, 1.0, 2.0, 300)
    assert args.names == list(ws_throughput.SERVERS) and args.sizes == (64, 16384)
