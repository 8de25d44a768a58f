"""PNG plots of the results (matplotlib: a benchmark-only dependency, extra ``bench``).

:func:`write_plots` reads the groups' JSON results and writes, next to them:

- ``fanout_throughput.png``: deliveries/s per scenario (a, b, c) per server,
  bars at the median with the min-max range;
- ``fanout_p99.png``: p99 latency edit -> remote observe, the same way;
- ``memory.png``: server memory per idle connection and per loaded document.

Without matplotlib nothing is drawn and the reason is returned instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .servers import ALL_SERVERS, SERVERS

__all__ = ["PLOTS", "write_plots"]

PLOTS = {
    "fanout_throughput.png": "Fan-out: deliveries/s per scenario and server",
    "fanout_p99.png": "Fan-out: p99 latency (edit to remote observe) per scenario and server",
    "memory.png": "Memory per idle connection and per loaded document",
}
COLORS = {
    "relay": "#1f77b4",
    "relay-yjs": "#6baed6",
    "y-websocket": "#2ca02c",
    "hocuspocus": "#9467bd",
    "pycrdt-websocket": "#ff7f0e",
    "bare": "#7f7f7f",
}


def write_plots(results: dict[str, dict[str, Any]], out_dir: Path) -> list[Path] | str:
    """Draw what the results allow; the files written, or why none were."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install -e '.[bench]'; make bench does it)"
    import matplotlib  # noqa: PLC0415 - optional dependency

    matplotlib.use("Agg")
    drawn: list[Path | None] = []
    relay = results.get("relay")
    if relay is not None:
        drawn.append(_fanout(relay, "deliveries_per_s", "deliveries/s", out_dir, log=False))
        drawn.append(_fanout(relay, "p99_ms", "p99 latency, ms (log scale)", out_dir, log=True))
    memory = results.get("memory")
    if memory is not None:
        drawn.append(_memory(memory, out_dir))
    return [path for path in drawn if path is not None]


def _bars(
    axis: Any,
    labels: Sequence[str],
    servers: Sequence[str],
    values: dict[str, list[float | None]],
    spans: dict[str, list[tuple[float, float] | None]],
) -> None:
    count = len(servers)
    width = 0.8 / max(1, count)
    for position, server in enumerate(servers):
        xs, ys, lows, highs = [], [], [], []
        for index, value in enumerate(values[server]):
            if value is None:
                continue
            xs.append(index - 0.4 + width * (position + 0.5))
            ys.append(value)
            span = spans[server][index]
            lows.append(value - span[0] if span else 0.0)
            highs.append(span[1] - value if span else 0.0)
        axis.bar(
            xs,
            ys,
            width,
            yerr=[lows, highs],
            capsize=2,
            label=SERVERS[server].label,
            color=COLORS.get(server),
        )
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(labels)


def _fanout(
    data: dict[str, Any], figure: str, ylabel: str, out_dir: Path, log: bool
) -> Path | None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    summary = [s for s in data["summary"] if s["scenario"] in ("a", "b", "c")]
    scenarios = sorted({s["scenario"] for s in summary})
    servers = [key for key in ALL_SERVERS if any(s["server"] == key for s in summary)]
    values: dict[str, list[float | None]] = {key: [] for key in servers}
    spans: dict[str, list[tuple[float, float] | None]] = {key: [] for key in servers}
    for server in servers:
        for scenario in scenarios:
            entry = next(
                (s for s in summary if s["server"] == server and s["scenario"] == scenario), None
            )
            ok = entry is not None and entry["status"] == "ok"
            values[server].append(entry.get(f"{figure}_median") if ok and entry else None)
            span = entry.get(f"{figure}_min_max") if ok and entry else None
            spans[server].append((span[0], span[1]) if span else None)
    if not any(v for vs in values.values() for v in vs):
        return None  # nothing measured (every run FAILED)
    titles = {
        "a": "(a) 1 room, 2 writers",
        "b": "(b) 1 room, 20 clients x 20/s",
        "c": "(c) 100 rooms x 2",
    }
    fig, axis = plt.subplots(figsize=(10, 5))
    _bars(axis, [titles.get(s, s) for s in scenarios], servers, values, spans)
    axis.set_ylabel(ylabel)
    if log:
        axis.set_yscale("log")
    axis.set_title(f"{PLOTS['fanout_throughput.png' if not log else 'fanout_p99.png']}")
    axis.legend(fontsize="small")
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / ("fanout_p99.png" if log else "fanout_throughput.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _memory(data: dict[str, Any], out_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from .memory.report import figure  # noqa: PLC0415

    runs = data["runs"]
    servers = [key for key in ALL_SERVERS if any(r["server"] == key for r in runs)]
    keys = ("kb_per_idle_connection", "kb_per_document")
    values = {server: [figure(runs, server, key) for key in keys] for server in servers}
    spans: dict[str, list[tuple[float, float] | None]] = {}
    for server in servers:
        spans[server] = []
        for key in keys:
            found = [
                r[key]
                for r in runs
                if r["server"] == server and r["status"] == "ok" and r.get(key) is not None
            ]
            spans[server].append((min(found), max(found)) if found else None)
    if not any(v is not None for vs in values.values() for v in vs):
        return None
    fig, axis = plt.subplots(figsize=(9, 5))
    _bars(axis, ["per idle connection", "per loaded document"], servers, values, spans)
    axis.set_ylabel("server RSS growth, KB")
    axis.set_title(PLOTS["memory.png"])
    axis.legend(fontsize="small")
    axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "memory.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
