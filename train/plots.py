"""A PNG of a training run: loss and validation metrics per epoch (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path) -> Path:
    """Write the loss curve (per logged step and per epoch) and the validation metrics.

    ``history`` is the trainer's list of per-epoch records (epoch, train_loss,
    loss_trace, val). Uses the Agg canvas directly: no GUI, no global backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    trace_x, trace_y = [], []
    for h in history:
        tr = h.get("loss_trace") or []
        for j, v in enumerate(tr):
            trace_x.append(h["epoch"] - 1 + (j + 1) / len(tr))
            trace_y.append(v)
    if trace_x:
        ax1.plot(trace_x, trace_y, lw=0.8, alpha=0.5, label="logged steps")
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="epoch mean")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.set_title("loss")
    ax1.legend()
    names = (("seg_a", "audio"), ("seg_v", "visual"), ("seg_av", "audio-visual"),
             ("seg_type", "Type@AV"), ("seg_event", "Event@AV"), ("evt_type", "event-level Type@AV"))
    have_val = [h for h in history if h.get("val")]
    for key, label in names:
        if have_val:
            ax2.plot([h["epoch"] for h in have_val], [h["val"][key] for h in have_val], "o-", ms=3, label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("F-score (%)")
    ax2.set_title("validation (segment level unless noted)")
    if have_val:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
