"""Optional LLM reranking of the fused hybrid hits (configs/rag.yaml `index.reranker: llm`).

A listwise reranker: the model sees the question and the top `candidates` fused chunks (delimited
and escaped like the answering prompt's sources) and replies `{"ranking": [chunk ids]}`. Written
here because no maintained library reranks with an arbitrary litellm model over our own chunk
ids; the call itself goes through `complete` (resources/clients/llm.LLMClient, i.e. litellm).

Nothing is lost on a bad reply: ids the model did not rank keep their fused order after the ranked
ones, unknown or repeated ids are ignored, and a reply that is not such JSON keeps the fused order
with the reason in `RerankResult.error`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from string import Template
from typing import Any

from retrieval.answering import SOURCES_CLOSE, SOURCES_OPEN, escape_data, render_sources, source_of
from scoring.audit_prompt import AuditPrompt, check_delimited, prompt_section
from scoring.model_output import extract_json_object

SECTION = "rag_rerank"
USER_FIELDS = frozenset({"question", "sources"})
Complete = Callable[[list[list[dict[str, str]]]], list[str | None]]


@dataclass(frozen=True)
class RerankResult:
    hits: list[Any]  # every candidate, reranked (then the hits below the candidates, unchanged)
    ranked_by_model: int  # candidates placed by the model's ranking
    error: str | None = None  # why the reply was not used (None: it was)


def load_rerank_prompt(path: Path | str | None = None) -> AuditPrompt:
    """The `rag_rerank` section of configs/prompts.yaml (or another prompt file), checked."""
    path, raw = prompt_section(path, SECTION)
    template = Template(raw["user_template"])
    if not template.is_valid() or set(template.get_identifiers()) != USER_FIELDS:
        raise ValueError(f"{path}: field '{SECTION}.user_template' must use exactly the "
                         "placeholders ${question}, ${sources}")
    check_delimited(raw["user_template"], "sources", SOURCES_OPEN, SOURCES_CLOSE,
                    f"{path}: field '{SECTION}.user_template'")
    # the same three fields as the audit prompts (version, system, user_template)
    return AuditPrompt(version=raw["version"], system=raw["system"],
                       user_template=raw["user_template"])


def rerank_messages(prompt: AuditPrompt, question: str, hits: Sequence[Any]) -> list[dict]:
    """The chat asking the model to rank `hits` for `question`."""
    user = Template(prompt.user_template).substitute(question=escape_data(question),
                                                      sources=render_sources(hits))
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def apply_ranking(reply: str | None, hits: Sequence[Any]) -> RerankResult:
    """`hits` reordered by the reply's `ranking` (see the module docstring); ranks renumbered
    from 1 and the fused rank kept in `ranks['fused']` when the hits are `retrieval.index.Hit`."""
    ids = [source_of(hit)[0] for hit in hits]
    ranking, error = _ranking(reply)
    order: list[int] = []
    for chunk_id in ranking:
        if chunk_id in ids and ids.index(chunk_id) not in order:
            order.append(ids.index(chunk_id))
    if ranking and not order:
        error = "the ranking names none of the candidate chunk ids"
    placed = len(order)
    order += [i for i in range(len(hits)) if i not in order]
    return RerankResult(hits=[_renumbered(hits[i], rank) for rank, i in enumerate(order, 1)],
                        ranked_by_model=placed, error=error)


def rerank_many(questions: Sequence[str], hit_lists: Sequence[Sequence[Any]], complete: Complete,
                prompt: AuditPrompt, candidates: int) -> list[RerankResult]:
    """Each question's top `candidates` hits reranked by one model call (all calls handed to
    `complete` at once, so the client runs them concurrently); hits below them keep their place."""
    if candidates < 2:
        raise ValueError(f"rerank candidates must be >= 2, got {candidates}")
    chats = [rerank_messages(prompt, question, hits[:candidates])
             for question, hits in zip(questions, hit_lists, strict=True)]
    replies = complete(chats) if chats else []
    results = []
    for reply, hits in zip(replies, hit_lists, strict=True):
        head = apply_ranking(reply, hits[:candidates])  # the rest keep their hits and ranks
        results.append(replace(head, hits=head.hits + list(hits[candidates:])))
    return results


def _ranking(reply: str | None) -> tuple[list[str], str | None]:
    if not reply:
        return [], "no reply"
    value, why = extract_json_object(reply)
    if value is None:
        return [], f"the reply holds no JSON object ({why})"
    ranking = value.get("ranking")
    if not isinstance(ranking, list) or not all(isinstance(item, str) for item in ranking):
        return [], "field 'ranking' must be a list of chunk ids"
    return ranking, None


def _renumbered(hit: Any, rank: int) -> Any:
    if hasattr(hit, "ranks") and hasattr(hit, "rank"):  # retrieval.index.Hit
        return replace(hit, rank=rank, ranks={**hit.ranks, "fused": hit.rank})
    return hit
