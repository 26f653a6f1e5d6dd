"""`--plot PATH.png`: matplotlib charts of a result (soak: time series; others: bars).

matplotlib is optional (`pip install 'krabfast[bench]'`) and imported only here.
"""

from __future__ import annotations

from krabfast.bench.report import ROWS, TARGET_ORDER


class PlotUnavailable(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'krabfast[bench]' "
                              "(or pip install 'matplotlib>=3.7')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results: dict[str, dict], path: str) -> None:
    """Write a PNG for one or several targets' results of the same scenario."""
    plt = _pyplot()
    names = [n for n in TARGET_ORDER if n in results] + [n for n in results if n not in TARGET_ORDER]
    scenario = results[names[0]]["scenario"]
    if scenario == "soak":
        fig = _soak(plt, results, names)
    else:
        fig = _bars(plt, results, names, scenario)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _soak(plt, results, names):
    panels = [("rss_mb", "server RSS (MB)"), ("cpu_pct", "server CPU (%)"),
              ("rpc_p99_ms", "rpc p99 (ms)"), ("rpc_p50_ms", "rpc p50 (ms)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.4 * len(panels)), sharex=True)
    for ax, (key, title) in zip(axes, panels):
        for name in names:
            series = results[name].get("series") or []
            xs = [s["t"] for s in series if s.get(key) is not None]
            ys = [s[key] for s in series if s.get(key) is not None]
            ax.plot(xs, ys, label=name, linewidth=1.4)
        ax.set_ylabel(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("seconds")
    fig.suptitle("soak")
    return fig


def _bars(plt, results, names, scenario):
    keys = [(k, label) for k, label in ROWS.get(scenario, [])
            if any(isinstance(results[n]["metrics"].get(k), (int, float)) for n in names)
            and not k.startswith("rss_before")]
    cols = 3
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    colors = {"reference": "#8c8c8c", "krabfast": "#d9480f", "echo": "#1c7ed6"}
    for i, ax in enumerate(axes.flat):
        if i >= len(keys):
            ax.axis("off")
            continue
        key, label = keys[i]
        values = [results[n]["metrics"].get(key) for n in names]
        shown = [v if isinstance(v, (int, float)) else 0 for v in values]
        bars = ax.bar(names, shown, color=[colors.get(n, "#495057") for n in names])
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if v is None else f"{v:,.3g}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize="small")
        ax.set_title(label, fontsize="medium")
        ax.tick_params(axis="x", labelsize="small")
    fig.suptitle(scenario)
    return fig
