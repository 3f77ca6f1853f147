"""Dagster assets and asset checks, grouped by stage: data, models (and adapters), evaluation,
reports. `all_assets()` is the one list that definitions.py and the tests load."""

from __future__ import annotations

from typing import Any


def all_assets() -> list[Any]:
    """Every asset and asset check of the project's modules."""
    import dagster as dg

    from assets import (
        adapters,
        alignment,
        batchqa_eval,
        behavioral,
        data,
        evaluation,
        inbox,
        judge,
        models,
        nightly,
        rag,
        rag_eval,
        rag_models,
        reports,
    )

    return list(dg.load_assets_from_modules(
        [data, inbox, models, adapters, evaluation, alignment, judge, behavioral,
         batchqa_eval, nightly, rag, rag_models, rag_eval,
         reports]))
