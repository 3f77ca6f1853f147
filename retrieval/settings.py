"""configs/rag.yaml as a frozen dataclass: the one source of the chunking, index and answering
settings the rag_* assets, the server's RAG endpoint and the benchmarks use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scoring.model_registry import ID_PATTERN

RAG_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "rag.yaml"
RERANKERS = ("none", "llm")


@dataclass(frozen=True)
class RagSettings:
    version: str
    seed: int
    max_words: int
    overlap_words: int
    embedder: str
    depth: int
    rrf_k: int
    reranker: str
    k: int
    max_tool_rounds: int
    comparison_models: tuple[str, ...]  # registry ids of configs/models.yaml, one column each
    comparison_max_tokens: int
    rerank_model: str  # registry id of the model reranking when reranker is llm
    rerank_candidates: int  # fused hits the reranker orders


def load_rag_settings(path: Path | str | None = None) -> RagSettings:
    """Read and check the settings; a missing or bad field names the file and the field."""
    path = Path(path) if path else RAG_CONFIG
    raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    sections = {"corpus": ("seed",), "chunking": ("max_words", "overlap_words"),
                "index": ("embedder", "depth", "rrf_k", "reranker"),
                "answering": ("k", "max_tool_rounds")}
    values: dict[str, Any] = {"version": raw.get("version") if isinstance(raw, dict) else None}
    if not isinstance(values["version"], str):
        raise ValueError(f"{path}: field 'version' must be a string")
    for section, names in sections.items():
        block = raw.get(section)
        if not isinstance(block, dict):
            raise ValueError(f"{path}: section {section!r} is missing")
        for name in names:
            value = block.get(name)
            expected = str if name in ("embedder", "reranker") else int
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(f"{path}: field '{section}.{name}' must be {expected.__name__}, "
                                 f"got {value!r}")
            values[name] = value
    if values["reranker"] == "cross-encoder":
        raise ValueError(f"{path}: field 'index.reranker': cross-encoder reranking needs "
                         "cross-encoder weights, and none are packaged for offline use here; "
                         "use llm (retrieval/rerank.py) or none")
    if values["reranker"] not in RERANKERS:
        raise ValueError(f"{path}: field 'index.reranker' must be one of {RERANKERS}")
    if not 0 <= values["overlap_words"] < values["max_words"] or values["k"] < 1:
        raise ValueError(f"{path}: need 0 <= chunking.overlap_words < chunking.max_words and "
                         "answering.k >= 1")
    values["comparison_models"], values["comparison_max_tokens"] = \
        _comparison(raw.get("comparison"), path)
    values["rerank_model"], values["rerank_candidates"] = _rerank(raw.get("rerank"), path)
    return RagSettings(**values)


def _rerank(block: Any, path: Path) -> tuple[str, int]:
    """The `rerank` section: the model of the llm reranker and how many fused hits it orders."""
    if not isinstance(block, dict):
        raise ValueError(f"{path}: section 'rerank' is missing")
    model, candidates = block.get("model"), block.get("candidates")
    if not isinstance(model, str) or not ID_PATTERN.match(model):
        raise ValueError(f"{path}: field 'rerank.model' must be a model id of "
                         f"configs/models.yaml, got {model!r}")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 2:
        raise ValueError(f"{path}: field 'rerank.candidates' must be an int >= 2, got "
                         f"{candidates!r}")
    return model, candidates


def _comparison(block: Any, path: Path) -> tuple[tuple[str, ...], int]:
    """The `comparison` section: the models answering side by side (the server's /compare page)
    and the new tokens of each reply."""
    if not isinstance(block, dict):
        raise ValueError(f"{path}: section 'comparison' is missing")
    models = block.get("models")
    if not isinstance(models, list) or not models:
        raise ValueError(f"{path}: field 'comparison.models' must be a non-empty list of model "
                         f"ids of configs/models.yaml, got {models!r}")
    for i, model in enumerate(models):
        if not isinstance(model, str) or not ID_PATTERN.match(model):
            raise ValueError(f"{path}: field 'comparison.models[{i}]': {model!r} is not a model "
                             f"id (ids match {ID_PATTERN.pattern})")
        if model in models[:i]:
            raise ValueError(f"{path}: field 'comparison.models[{i}]': {model!r} appears twice")
    max_tokens = block.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"{path}: field 'comparison.max_tokens' must be an int >= 1, got "
                         f"{max_tokens!r}")
    return tuple(models), max_tokens
