"""Training plots (matplotlib, PNG bytes)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence


def loss_curves_png(curves: Mapping[str, Sequence[float]], title: str = "training loss") -> bytes:
    """One line per run (e.g. {"lora": [...], "grit": [...]}): loss against optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    for name, losses in curves.items():
        axis.plot(range(1, len(losses) + 1), losses, label=name, linewidth=1.4)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if len(curves) > 1:
        axis.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
