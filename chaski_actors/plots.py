"""PNG plots of run reports, drawn with matplotlib's Agg backend.

Everything here works from a report (see :mod:`chaski_actors.report`), so a
simulated run, a real one and a comparison of the two are drawn by the same
code. matplotlib is imported inside the functions: it takes a good part of
a second to import, and a ``simulate`` that writes no plots should not pay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PLOTS", "compare_cdf", "latency_cdf", "latency_timeline", "plot_all"]

# One colour per topic, the same in every plot of a run.
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _figure(width: float = 8.0, height: float = 5.0) -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # A bare Figure, not pyplot: nothing global, nothing to close.
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return figure, figure.add_subplot()


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _subtitle(report: Mapping[str, Any]) -> str:
    return (
        f"scenario {report['scenario']['name']}, {report['backend']}, "
        f"seed {report['seed']}, {report['hosts']} hosts"
    )


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _draw_cdf(axes: Axes, cdf: Sequence[float], label: str, **style: Any) -> None:
    fractions = [i / 100 for i in range(len(cdf))]
    axes.plot(cdf, fractions, label=label, drawstyle="steps-post", **style)


def _log_if_wide(axes: Axes, values: Sequence[float]) -> None:
    positive = [v for v in values if v > 0]
    # Over a factor of 20 the body of the distribution is lost on a linear
    # axis; 20 is a judgement call.
    if positive and max(positive) / min(positive) > 20:
        axes.set_xscale("log")


def latency_cdf(report: Mapping[str, Any], path: Path) -> Path:
    """One cumulative distribution of one-way latency per topic."""
    figure, axes = _figure()
    values: list[float] = []
    for i, (topic, data) in enumerate(report["topics"].items()):
        if not data["cdf_ms"]:
            continue
        latency = data["latency_ms"]
        label = f"{topic}: {latency['count']} msgs, p99 {latency['p99_ms']:.1f} ms"
        _draw_cdf(axes, data["cdf_ms"], label, color=_colour(i))
        values.extend(data["cdf_ms"])
    _log_if_wide(axes, values)
    axes.set_title(f"One-way latency CDF per topic\n{_subtitle(report)}")
    axes.set_xlabel("one-way latency (ms)")
    axes.set_ylabel("fraction of messages delivered within x")
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    if values:
        axes.legend(loc="lower right")
    else:
        axes.text(0.5, 0.5, "no message was delivered", ha="center")
    return _save(figure, path)


def latency_timeline(report: Mapping[str, Any], path: Path) -> Path:
    """Latency over the run, per topic, with fault windows shaded."""
    figure, axes = _figure(10.0, 5.0)
    for i, (start, end, what) in enumerate(
        (f["start_s"], f["end_s"], f["what"]) for f in report["faults"]
    ):
        axes.axvspan(
            start,
            end,
            color="#f4a582",
            alpha=0.35,
            label="fault windows" if i == 0 else None,
        )
        axes.annotate(
            what, (start, 1.0), xycoords=("data", "axes fraction"), va="top", size=8
        )
    values: list[float] = []
    for i, (topic, line) in enumerate(report["timeline"].items()):
        if not line["t_s"]:
            continue
        colour = _colour(i)
        t_s, p50 = _broken_at_gaps(line["t_s"], line["p50_ms"], line["bin_s"])
        _t, p99 = _broken_at_gaps(line["t_s"], line["p99_ms"], line["bin_s"])
        axes.plot(t_s, p50, color=colour, marker=".", label=f"{topic} p50")
        axes.plot(
            t_s,
            p99,
            color=colour,
            linestyle="--",
            alpha=0.7,
            label=f"{topic} p99",
        )
        values.extend(line["p50_ms"] + line["p99_ms"])
    width = next(iter(report["timeline"].values()), {"bin_s": 0})["bin_s"]
    faults = "no faults" if not report["faults"] else "faults shaded"
    axes.set_title(
        f"Latency over time ({faults}; {width:.2f} s bins)\n{_subtitle(report)}"
    )
    axes.set_xlabel("time since start (s)")
    axes.set_ylabel("one-way latency (ms)")
    axes.set_xlim(0, report["run"]["clock_s"])
    positive = [v for v in values if v > 0]
    # A stall of seconds next to latencies of milliseconds: only a log
    # scale shows both; the factor of 50 is a judgement call.
    if positive and max(positive) / min(positive) > 50:
        axes.set_yscale("log")
        axes.set_ylabel("one-way latency (ms, log scale)")
    else:
        axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    # Outside the axes: inside, it would hide the end of the run.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(figure, path)


def _broken_at_gaps(
    t_s: Sequence[float], values: Sequence[float], width: float
) -> tuple[list[float], list[float]]:
    """Insert a gap (NaN) where bins are missing, so no line bridges a
    stretch in which nothing arrived."""
    xs: list[float] = []
    ys: list[float] = []
    for t, value in zip(t_s, values, strict=True):
        if xs and t - xs[-1] > 1.5 * width:
            xs.append((t + xs[-1]) / 2)
            ys.append(float("nan"))
        xs.append(t)
        ys.append(value)
    return xs, ys


def topology(report: Mapping[str, Any], path: Path) -> Path:
    """The topology, each edge coloured by the median latency measured on it."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    graph, measured = _measured_graph(report)
    pos = _layout(graph, report["positions"])
    figure, axes = _figure(8.0, 7.0)
    known = [measured[e] for e in graph.edges if e in measured]
    # The scale starts at zero, so that colours compare latencies honestly:
    # a scale from 5.5 to 5.6 ms would paint noise as a difference.
    norm = Normalize(0.0, max(known, default=1.0) or 1.0)
    cmap = colormaps["plasma"]
    for u, v in graph.edges:
        (x1, y1), (x2, y2) = pos[u], pos[v]
        if (u, v) in measured:
            axes.plot(
                [x1, x2], [y1, y2], color=cmap(norm(measured[u, v])), linewidth=2.2
            )
        else:
            axes.plot([x1, x2], [y1, y2], color="#aaaaaa", linestyle=":", linewidth=1)
    xs = [pos[h][0] for h in graph.nodes]
    ys = [pos[h][1] for h in graph.nodes]
    small = graph.number_of_nodes() <= 40
    axes.scatter(xs, ys, s=60 if small else 25, color="#333333", zorder=3)
    if small:
        for host in graph.nodes:
            axes.annotate(
                host,
                pos[host],
                xytext=(0, -11),
                textcoords="offset points",
                ha="center",
                va="top",
                size=7,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"},
                zorder=4,
            )
    from matplotlib.cm import ScalarMappable

    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes)
    bar.set_label("measured median one-way latency on the edge (ms)")
    axes.set_title(
        f"Topology, edges coloured by measured latency "
        f"(dotted: no traffic)\n{_subtitle(report)}"
    )
    axes.set_axis_off()
    return _save(figure, path)


def _measured_graph(
    report: Mapping[str, Any],
) -> tuple[nx.Graph[str], dict[tuple[str, str], float]]:
    graph: nx.Graph[str] = nx.Graph()
    samples: dict[tuple[str, str], list[float]] = {}
    for host in report["positions"]:
        graph.add_node(host)
    for row in report["links"]:
        if not row["edge"]:
            continue
        u, v = row["source"], row["target"]
        graph.add_edge(u, v)
        if row["latency_ms"] is not None:
            samples.setdefault((u, v), []).append(row["latency_ms"]["p50_ms"])
    measured: dict[tuple[str, str], float] = {}
    for (u, v), values in samples.items():
        for key in ((u, v), (v, u)):
            measured.setdefault(key, 0.0)
            measured[key] = max(measured[key], sum(values) / len(values))
    return graph, measured


def _layout(
    graph: nx.Graph[str], positions: Mapping[str, Sequence[float]]
) -> dict[str, tuple[float, float]]:
    if positions and all(h in positions for h in graph.nodes):
        return {h: (positions[h][0], positions[h][1]) for h in graph.nodes}
    if graph.number_of_nodes() > 0 and nx.is_tree(graph):
        return _tree_layout(graph)
    layout = nx.spring_layout(graph, seed=1)
    return {h: (float(p[0]), float(p[1])) for h, p in layout.items()}


def _tree_layout(graph: nx.Graph[str]) -> dict[str, tuple[float, float]]:
    """Layers from the most central host down, leaves spread evenly."""
    root = min(nx.center(graph))
    depth = nx.single_source_shortest_path_length(graph, root)
    layers: dict[int, list[str]] = {}
    for host in nx.dfs_preorder_nodes(graph, root):
        layers.setdefault(depth[host], []).append(host)
    pos = {}
    for level, hosts in layers.items():
        for i, host in enumerate(hosts):
            pos[host] = ((i + 0.5) / len(hosts), -float(level))
    return pos


def compare_cdf(reports: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> Path:
    """Latency CDFs of several runs overlaid: one colour per topic, one line
    style per run."""
    figure, axes = _figure()
    styles = ("-", "--", ":", "-.")
    topics = sorted({t for _label, r in reports for t in r["topics"]})
    values: list[float] = []
    for j, (label, report) in enumerate(reports):
        for i, topic in enumerate(topics):
            data = report["topics"].get(topic)
            if data is None or not data["cdf_ms"]:
                continue
            _draw_cdf(
                axes,
                data["cdf_ms"],
                f"{topic} ({label})",
                color=_colour(i),
                linestyle=styles[j % len(styles)],
            )
            values.extend(data["cdf_ms"])
    _log_if_wide(axes, values)
    names = " vs ".join(f"{label}" for label, _r in reports)
    axes.set_title(f"One-way latency CDF: {names}")
    axes.set_xlabel("one-way latency (ms)")
    axes.set_ylabel("fraction of messages delivered within x")
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


#: The plots of one run, by file name.
PLOTS = {
    "latency_cdf.png": latency_cdf,
    "latency_timeline.png": latency_timeline,
    "topology.png": topology,
}


def plot_all(report: Mapping[str, Any], directory: str | Path) -> list[Path]:
    """Draw every plot of :data:`PLOTS` into ``directory``."""
    return [draw(report, Path(directory) / name) for name, draw in PLOTS.items()]
