"""How ``ctl status`` and ``ctl top`` draw a status snapshot: plain functions from dicts to lines."""

from __future__ import annotations

import time
from typing import Any

COLUMNS = ("WORKER", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "IN FLIGHT", "CONNS", "WS", "RSS", "BUSY")


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def worker_row(worker: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(worker["worker_id"]),
        str(worker["pid"] or "-"),
        str(worker["generation"]),
        worker["state"],
        human_duration(worker["uptime"]),
        str(worker["requests"]),
        str(worker["in_flight"]),
        str(worker["connections"]),
        str(worker.get("websockets", 0)),
        human_bytes(worker["rss"]) if worker["rss"] else "-",
        f"{100 * worker['busy']:.0f}%",
    )


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned, as people read them.
    left = {"STATE"}
    return [
        "  ".join(
            cell.ljust(width) if name in left else cell.rjust(width)
            for cell, width, name in zip(row, widths, header, strict=True)
        ).rstrip()
        for row in [header, *rows]
    ]


def event_line(event: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
    reason = event.get("reason")
    why = f" ({reason})" if reason and str(reason) not in event["message"] else ""
    return f"{stamp}  {event['kind']:<15} {event['message']}{why}"


def render(status: dict[str, Any], events: int = 5) -> list[str]:
    totals = status["totals"]
    state = "stopping" if status["stopping"] else "serving"
    if status["reloading"]:
        state = f"reloading to generation {status['reloading']}"
    lines = [
        f"forkserve master pid {status['master_pid']}  app {status['app']}  generation {status['generation']}"
        f"  up {human_duration(status['uptime'])}  {state}",
        f"workers: {totals['ready']} ready of {totals['workers']} live, {status['desired']} wanted"
        + (f"  zygote {status['zygote']}" if status.get("zygote") else ""),
        "",
    ]
    rows = [worker_row(w) for w in status["workers"]]
    rows.append(
        (
            "total", "", "", "", "", str(totals["requests"]), str(totals["in_flight"]),
            str(totals["connections"]), str(totals.get("websockets", 0)),
            human_bytes(totals["rss"]) if totals["rss"] else "-", "",
        )
    )  # fmt: skip
    lines += table(rows, COLUMNS)
    lines += ["", "listening: " + ", ".join(listener["address"] for listener in status["listeners"])]
    recent = status["events"][-events:]
    if recent:
        lines += ["", "recent events:"] + ["  " + event_line(event) for event in recent]
    return lines


def parse_scale(text: str) -> dict[str, int]:
    """``3`` sets the number of workers, ``+2``/``-1`` changes it; ValueError otherwise."""
    text = text.strip()
    if text[:1] in ("+", "-") and text[1:].isdigit():
        delta = int(text)
        if delta == 0:
            raise ValueError("a change of 0 does nothing")
        return {"delta": delta}
    if text.isdigit():
        return {"to": int(text)}
    raise ValueError(f"{text!r} is not N, +K or -K")
