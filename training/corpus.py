"""Text corpus for the embedded base model: the platform's own generators rendered as documents.

`build_corpus` concatenates the documents of every source in `CORPUS_SOURCES`, shuffles them with
the seed and optionally truncates. Issue 4's AMR cases and batch-record QA plug in as further
`CorpusSource` entries (a name and a `seed -> list[str]` function); nothing else changes. The RAG
corpus's documents are one: without them the RAG answers' words are new to the model.

Chat-formatted documents use `render_chat`, which writes exactly what the tokenizer's chat template
(training/embedded_model.py) renders, minus the leading <s>, so pretraining already sees the format
that fine-tuning and inference use.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scoring.audit_prompt import data_line, load_prompt
from synthetic.catalog import load_catalog
from synthetic.master_data import build_site_master, derive_seed
from synthetic.splits import SplitSpec, generate_split, load_dataset_config

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ROLES = ("system", "user", "assistant")
ROLE_MARKERS = tuple(f"<|{role}|>" for role in ROLES)
SPECIAL_TOKENS = (BOS, EOS, PAD, UNK, *ROLE_MARKERS)

# Small splits: a clean one, a deviation-rich one and an adversarial one, so the corpus holds clean
# records, every deviation type and prompt-injection comments. Names give record prefixes PC/PF/PA.
CORPUS_SPLITS = (
    SplitSpec("pretrain_clean", n_batches=12, steps_min=16, steps_max=24, deviation_rate=0.0),
    SplitSpec("pretrain_faulty", n_batches=12, steps_min=16, steps_max=24, deviation_rate=0.3),
    SplitSpec("pretrain_adversarial", n_batches=6, steps_min=16, steps_max=24,
              deviation_rate=0.05, prompt_injection=True),
)
_AUDIT_EXAMPLES_PER_SPLIT = 8


@dataclass(frozen=True)
class CorpusSource:
    """One kind of document: `build(seed)` returns its texts, deterministically for the seed."""

    name: str
    build: Callable[[int], list[str]]


def render_chat(messages: Sequence[Mapping[str, str]]) -> str:
    """The chat template's text for `messages`, without the leading <s>."""
    parts = []
    for position, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"render_chat: message {position} field 'role': {role!r} is not one "
                             f"of {', '.join(ROLES)}")
        parts.append(f"<|{role}|>\n{message['content']}{EOS}\n")
    return "".join(parts)


def corpus_sha256(documents: Sequence[str]) -> str:
    """sha256 hex of the documents, each length-prefixed so boundaries count."""
    digest = hashlib.sha256()
    for document in documents:
        data = document.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def build_corpus(seed: int, max_documents: int | None = None,
                 sources: Sequence[CorpusSource] | None = None) -> list[str]:
    """All sources' documents, shuffled with `seed`, the first `max_documents` if given."""
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"build_corpus: max_documents must be >= 1, got {max_documents}")
    documents: list[str] = []
    for source in sources or CORPUS_SOURCES:
        documents.extend(source.build(derive_seed(seed, "corpus", source.name)))
    random.Random(derive_seed(seed, "corpus", "shuffle")).shuffle(documents)
    return documents[:max_documents] if max_documents else documents


def _generated_splits(seed: int) -> list[tuple[list[dict], list[dict]]]:
    """(records, manifest) per corpus split; the site master comes from configs/datasets.yaml."""
    dataset_cfg = load_dataset_config()
    master = build_site_master(dataset_cfg.site_master, dataset_cfg.seed)
    out = []
    for spec in CORPUS_SPLITS:
        split = generate_split(spec, master, derive_seed(seed, spec.name))
        out.append((split.records, split.manifest))
    return out


def _batches(records: list[dict]) -> list[list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(str(record.get("batch_id")), []).append(record)
    return list(grouped.values())


def batch_record_documents(seed: int) -> list[str]:
    """Each batch three times: its records as JSON Lines (as the audit prompt shows them), as
    prose, and as the record audit's compact `key=value` lines (scoring/record_audit.py)."""
    from scoring.record_audit import compact_record

    documents = []
    for records, _ in _generated_splits(seed):
        for batch in _batches(records):
            documents.append("\n".join(data_line(record) for record in batch))
            documents.append("\n".join(step_summary(record) for record in batch))
            documents.append("\n\n".join(compact_record(record) for record in batch))
    return documents


def step_summary(record: Mapping[str, Any]) -> str:
    """One executed step in a sentence or two; tolerant of the fields deviations remove."""
    get = record.get
    text = (f"Batch {get('batch_id')} of {get('product_code')}, step {get('step_seq')} "
            f"({get('record_id')}): {get('phase')} in {get('operation')}, "
            f"{get('unit_procedure')}. ")
    if get("material_id"):
        text += (f"{get('qty_actual')} {get('uom')} of material {get('material_id')} "
                 f"lot {get('material_lot')}. ")
    text += (f"Equipment {get('equipment_id')}, operator {get('operator_id')}, verified by "
             f"{get('verifier_id')}; started {get('start_ts')}, ended {get('end_ts')}, recorded "
             f"{get('recorded_ts')}; status {get('status')}.")
    parameters = get("parameters")
    if isinstance(parameters, Mapping) and parameters:
        readings = []
        for name, reading in parameters.items():
            if isinstance(reading, Mapping):
                readings.append(f"{name} {reading.get('value')} {reading.get('unit')} "
                                f"(limits {reading.get('low')} to {reading.get('high')})")
        text += " Parameters: " + "; ".join(readings) + "."
    if get("comments"):
        text += f" Comment: {get('comments')}"
    return text


def catalog_documents(seed: int) -> list[str]:
    """One document per deviation type: name, slug, ALCOA+ principles, why and rule."""
    del seed  # the catalog is fixed; the signature is the CorpusSource one
    return [f"Deviation type {t.id}: {t.name} ({t.slug}). ALCOA+ principles: "
            f"{', '.join(t.alcoa_principles)}. Fields: {', '.join(t.fields)}.\n"
            f"Why it matters: {t.why}\nRule: {t.rule}" for t in load_catalog().types]


def audit_prompt_documents(seed: int) -> list[str]:
    """The audit prompt's system text."""
    del seed
    return [load_prompt().system]


def chat_documents(seed: int) -> list[str]:
    """Chat Q/A: catalog questions, and single-record audits answered in the output JSON (the
    batch audit's and the record audit's formats)."""
    from scoring.record_audit import load_record_prompt, record_answer, record_messages

    rng = random.Random(seed)
    record_prompt = load_record_prompt()
    catalog = load_catalog()
    system = "You are a GxP data-integrity assistant."
    documents = []
    for t in catalog.types:
        qa = [(f"What is the deviation type {t.slug}?", f"{t.name}: {t.rule}"),
              (f"Why is {t.name.lower()} a GxP problem?", t.why),
              (f"Which ALCOA+ principles does {t.slug} violate?", ", ".join(t.alcoa_principles))]
        question, answer = rng.choice(qa)
        documents.append(render_chat([{"role": "system", "content": system},
                                      {"role": "user", "content": question},
                                      {"role": "assistant", "content": answer}]))
    for records, manifest in _generated_splits(seed):
        labels: dict[str, list[dict]] = {}
        for label in manifest:
            labels.setdefault(label["record_id"], []).append(label)
        for record in rng.sample(records, min(_AUDIT_EXAMPLES_PER_SPLIT, len(records))):
            documents.append(render_chat([
                {"role": "system", "content": system},
                {"role": "user", "content": "Audit this record:\n" + data_line(record)},
                {"role": "assistant", "content": _audit_answer(record, labels.get(
                    str(record["record_id"]), []))},
            ]))
            documents.append(render_chat([
                *record_messages(record_prompt, record),
                {"role": "assistant",
                 "content": record_answer(labels.get(str(record["record_id"]), []))}]))
    return documents


def _audit_answer(record: Mapping[str, Any], labels: list[dict]) -> str:
    findings = [{"record_id": label["record_id"], "deviation_type": label["deviation_type"],
                 "field": label.get("field"), "evidence": label["why"]} for label in labels]
    summary = (f"{len(findings)} deviation(s) in {record.get('record_id')}." if findings
               else f"No deviation in {record.get('record_id')}.")
    return data_line({"summary": summary, "findings": findings})


def rag_documents(seed: int) -> list[str]:
    """The RAG corpus's SOPs and guideline documents (synthetic/rag_corpus.py) in the wording of
    `seed` (the same facts as the index's documents, other sentences), and the `rag_answer`
    system prompt: the vocabulary and prose the RAG adapters read."""
    from retrieval.answering import load_rag_prompt
    from synthetic.rag_corpus import build_rag_corpus

    return [f"{doc.title}\n{doc.text}" for doc in build_rag_corpus(seed)] + [
        load_rag_prompt().system]


CORPUS_SOURCES: tuple[CorpusSource, ...] = (
    CorpusSource("batch_records", batch_record_documents),
    CorpusSource("deviation_catalog", catalog_documents),
    CorpusSource("audit_prompt", audit_prompt_documents),
    CorpusSource("chat_examples", chat_documents),
    CorpusSource("rag_documents", rag_documents),
)
