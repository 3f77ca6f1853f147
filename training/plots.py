"""Training plots (matplotlib, PNG bytes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def loss_curves_png(curves: Mapping[str, Sequence[float]], title: str = "training loss") -> bytes:
    """One line per run (e.g. {"lora": [...], "grit": [...]}): loss against logging step."""
    return loss_panels_png({title: curves})


def loss_panels_png(panels: Mapping[str, Mapping[str, Sequence[float]]]) -> bytes:
    """One panel per objective ({panel title: {run: losses}}), side by side: losses of different
    objectives (SFT cross-entropy, DPO/ORPO, GRPO) are not on one scale, so none is overlaid."""
    from scoring.plots import figure_png, pyplot

    plt = pyplot()
    panels = {title: curves for title, curves in panels.items() if curves}
    count = max(1, len(panels))
    fig, axes = plt.subplots(1, count, figsize=(6.2 * count, 3.6), constrained_layout=True,
                             squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels.items(), strict=False):
        for name, losses in curves.items():
            axis.plot(range(1, len(losses) + 1), losses, label=name, linewidth=1.4)
        axis.set_xlabel("logging step")
        axis.set_ylabel("loss")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if len(curves) > 1:
            axis.legend()
    return figure_png(fig)
