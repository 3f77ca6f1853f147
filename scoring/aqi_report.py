"""Tables and the per-layer plot of AQI results (scoring/aqi.py). Plain Python, matplotlib."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from scoring.aqi import DeltaAQI, LayerAQI


def layer_table(per_model: Mapping[str, Sequence[LayerAQI]],
                layer_labels: Sequence[int]) -> pd.DataFrame:
    """One row per (model, layer): XBI, CHI, their normalised forms and AQI."""
    return pd.DataFrame([
        {"model": model, "layer": layer_labels[result.layer], "n": result.n, "xbi": result.xbi,
         "chi": result.chi, "chi_norm": result.chi_norm, "xb_norm": result.xb_norm,
         "aqi": result.aqi}
        for model, results in per_model.items() for result in results
    ])


def delta_table(deltas: Mapping[str, DeltaAQI]) -> pd.DataFrame:
    """One row per tuned model: base and tuned AQI (mean over layers), delta and its CI."""
    return pd.DataFrame([
        {"model": model, "aqi_base": d.base_aqi, "aqi_tuned": d.tuned_aqi, "delta_aqi": d.estimate,
         "ci_low": d.low, "ci_high": d.high, "share_positive": d.share_positive,
         "significant": not (d.low <= 0.0 <= d.high), "n_prompts": d.n, "n_boot": d.n_boot,
         "interval": d.interval}
        for model, d in deltas.items()
    ])


def aqi_layer_plot(table: pd.DataFrame, title: str = "AQI per layer (higher: safe and unsafe "
                   "prompts further apart)") -> bytes:
    """AQI against layer, one line per model (PNG bytes)."""
    from scoring.plots import figure_png, pyplot

    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    for model, rows in table.groupby("model", sort=False):
        axis.plot(rows["layer"], rows["aqi"], marker="o", linewidth=1.4, label=model)
    axis.set_xlabel("layer")
    axis.set_ylabel("AQI (0-1)")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure_png(fig)
