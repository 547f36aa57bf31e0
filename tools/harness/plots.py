"""PNG plots of `avparse bench live` results (matplotlib, Agg backend, no display needed).

- ``latency.png``: the distribution of latencies per configuration (box plots:
  ground-truth onsets and offsets where any were matched, and every published
  event against its own media time);
- ``where_time_goes.png``: stacked bars per configuration: the mean latency of
  an event split into its parts, and the compute per snippet split by stage;
- ``capacity.png``: decision lag and compute per media second against the
  number of streams (when a sweep ran).
"""

from __future__ import annotations

from pathlib import Path

PART_COLOURS = ("#9ecae1", "#fdae6b", "#fdd0a2", "#31a354", "#756bb1", "#e6550d", "#636363")
STAGE_COLOURS = {"assembler": "#fdae6b", "extraction": "#31a354", "HAN": "#756bb1", "tracking": "#e6550d",
                 "publishing": "#636363"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plots(res: dict, out: Path) -> list[Path]:
    """Write the plots that the results allow; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    e2e = res.get("e2e") or {}
    if e2e:
        paths.append(latency_plot(e2e, out / "latency.png"))
        paths.append(where_plot(e2e, out / "where_time_goes.png"))
    cap = res.get("capacity")
    if cap and cap.get("runs"):
        paths.append(capacity_plot(cap, out / "capacity.png"))
    return paths


def latency_plot(e2e: dict, path: Path) -> Path:
    plt = _plt()
    names = list(e2e)
    kinds = [("onset", "ground-truth onsets"), ("offset", "ground-truth offsets"), ("events", "every published event")]
    kinds = [k for k in kinds if any(e2e[n].get("latency_samples", {}).get(k[0]) for n in names)]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.5 * max(1, len(kinds)), 4.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], kinds):
        data = [e2e[n].get("latency_samples", {}).get(key) or [float("nan")] for n in names]
        ax.boxplot(data, whis=(5, 95), showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_ylabel("media event -> message at subscriber (s)")
        ax.grid(axis="y", alpha=0.3)
        for i, d in enumerate(data, 1):
            n = sum(1 for x in d if x == x)
            ax.annotate(f"n={n}", (i, 0), xytext=(0, -28), textcoords="offset points", ha="center", fontsize=7,
                        xycoords=("data", "axes fraction"))
    if not kinds:
        axes[0][0].text(0.5, 0.5, "no latencies measured", ha="center", va="center")
    fig.suptitle("Latency per configuration (box: p25-p75, whiskers: p5-p95)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def where_plot(e2e: dict, path: Path) -> Path:
    from .live_summary import PARTS

    plt = _plt()
    names = list(e2e)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
    _stacked(a1, names, {part: [(e2e[n].get("latency_parts") or {}).get(part) or 0.0 for n in names]
                         for part in PARTS}, PART_COLOURS, "mean seconds per event", "Latency of an event, by part")
    _stacked(a2, names, {stage: [e2e[n]["compute"]["where_ms_per_snippet"][stage] for n in names]
                         for stage in STAGE_COLOURS}, STAGE_COLOURS.values(), "ms of compute per snippet",
             "Compute per snippet, by stage")
    for ax in (a1, a2):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stacked(ax, names, series: dict, colours, ylabel: str, title: str) -> None:
    """One bar per name, ``series`` (label -> a value per name) stacked in order."""
    bottom = [0.0] * len(names)
    for (label, vals), colour in zip(series.items(), colours):
        ax.bar(names, vals, bottom=bottom, label=label, color=colour)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(axis="x", rotation=30)


def capacity_plot(cap: dict, path: Path) -> Path:
    plt = _plt()
    runs = sorted(cap["runs"], key=lambda r: r["streams"])
    ks = [r["streams"] for r in runs]
    p50 = [(r.get("lag", {}).get("decision") or {}).get("p50", float("nan")) for r in runs]
    p95 = [(r.get("lag", {}).get("decision") or {}).get("p95", float("nan")) for r in runs]
    rtf = [r["rtf"]["compute_per_stream"] or float("nan") for r in runs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ks, p50, "o-", label="p50")
    a1.plot(ks, p95, "s--", label="p95")
    for k, r, y in zip(ks, runs, p95):
        if not r.get("realtime"):
            a1.annotate("not real time", (k, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color="red")
    a1.set_xlabel("streams (K)")
    a1.set_ylabel("decision lag (s)")
    a1.set_title("End of evidence -> prediction")
    a1.legend()
    a2.plot(ks, [k * x for k, x in zip(ks, rtf)], "o-", label="all streams")
    a2.plot(ks, rtf, "s--", label="per stream")
    a2.axhline(1.0, color="grey", lw=0.8)
    a2.set_xlabel("streams (K)")
    a2.set_ylabel("compute s per media s")
    a2.set_title(f"Real-time factor (largest real-time K: {cap['max_realtime_streams']})")
    a2.legend()
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.set_xticks(ks)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
