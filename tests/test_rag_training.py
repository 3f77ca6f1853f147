"""synthetic/rag_training.py on hand-built questions of the RAG question contract: curriculum
order, targets the parser accepts, hard negatives, preference pairs whose rejected side fails a
metric, and rows that training/sft.py's and training/preference.py's readers take."""

from __future__ import annotations

import json
import math
import re

import pytest

from retrieval.answering import (
    answer_questions,
    is_abstention,
    is_refusal,
    load_rag_prompt,
    parse_rag_reply,
)
from retrieval.chunking import Chunk
from scoring.rag_metrics import holds_evidence, score_item
from synthetic.rag_training import (
    REJECTED_KINDS,
    STAGES,
    curriculum_sft_rows,
    grounding_preference_rows,
    sample_per_group,
)
from training.preference import read_preference_rows
from training.sft import read_sft_rows

LATE = "Late entries must be recorded within 24 hours of the activity and countersigned by QA."
TEMP = "The cold room is kept between 2 and 8 degrees Celsius and checked every 4 hours."
ARCHIVE = "Batch records are archived for at least 10 years after batch release."
CHUNKS = {c.chunk_id: c for c in [
    Chunk("sop-late#000", "sop-late", "Late entries", f"Scope: manual entries. {LATE}"),
    Chunk("sop-late#001", "sop-late", "Late entries",
          "Corrections keep the original value visible and state the reason for the change."),
    Chunk("sop-clean#000", "sop-clean", "Line clearance",
          "Line clearance is verified by a second operator before each batch starts."),
    Chunk("sop-temp#000", "sop-temp", "Cold room", TEMP),
    Chunk("sop-arch#000", "sop-arch", "Archiving", ARCHIVE),
]}
DOSE = {"name": "drug_dose_lookup",
        "arguments": {"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia",
                      "egfr": 25}}


def q(qid, category, question, ranked, *, evidence=None, reference="", history=(),
      tool=None, refuse=False, split="train"):
    return {"question_id": qid, "split": split, "category": category, "question": question,
            "history": list(history), "doc_id": None, "evidence": evidence,
            "reference_answer": reference, "expected_tool_call": tool, "should_refuse": refuse,
            "_ranked": ranked}


QUESTIONS = [
    q("q-late", "lookup", "Within how many hours must late entries be recorded?",
      ["sop-late#000", "sop-late#001", "sop-clean#000", "sop-temp#000"], evidence=LATE,
      reference="Late entries must be recorded within 24 hours of the activity."),
    q("q-temp", "paraphrase", "How cold must the cold room be?",
      ["sop-temp#000", "sop-clean#000", "sop-arch#000", "sop-late#001"], evidence=TEMP,
      reference="The cold room is kept between 2 and 8 degrees Celsius."),
    q("q-arch", "multi_turn", "And for how long are they archived?",
      ["sop-arch#000", "sop-late#001"], evidence=ARCHIVE,
      reference="Batch records are archived for at least 10 years after batch release.",
      history=[{"role": "user", "content": "What happens to batch records after release?"},
               {"role": "assistant", "content": "They are archived."}]),
    q("q-dose", "tool", "What is the amoxicillin dose for pneumonia with an eGFR of 25?",
      ["sop-clean#000"], tool=DOSE),
    q("q-none", "unanswerable", "What is the gowning procedure for grade A areas?",
      ["sop-clean#000", "sop-late#001"]),
    q("q-backdate", "unsafe", "How do I backdate a batch record entry without QA noticing?",
      ["sop-late#000"], refuse=True),
    q("q-miss", "lookup", "Who verifies the cold room log?", ["sop-clean#000", "sop-arch#000"],
      evidence=TEMP, reference="The cold room is checked every 4 hours."),
    q("q-test", "lookup", "Test split question?", ["sop-late#000"], evidence=LATE,
      reference="Within 24 hours.", split="test"),
]
BY_TEXT = {row["question"]: row for row in QUESTIONS}


def retrieve(text):
    return [CHUNKS[cid] for cid in BY_TEXT[text]["_ranked"]]


def shown_ids(messages):
    """Chunk ids and tool result ids the prompt shows the model."""
    text = "\n".join(m["content"] for m in messages if m["role"] == "user")
    return re.findall(r"<<<CHUNK (\S+)", text) + re.findall(r"## Tool result (\S+)", text)


def sources_of(messages):
    ids = shown_ids(messages)
    sources = {cid: CHUNKS[cid].text for cid in ids if cid in CHUNKS}
    for block in re.findall(r"## Tool result (\S+) .*?\n<<<TOOL_RESULT\n(.*?)\nTOOL_RESULT>>>",
                            "\n".join(m["content"] for m in messages), re.DOTALL):
        sources[block[0]] = block[1]
    return sources


@pytest.fixture(scope="module")
def sft_rows():
    return curriculum_sft_rows(QUESTIONS, retrieve, k=3)


def test_curriculum_stage_order_and_rows(sft_rows):
    stages = [row["stage"] for row in sft_rows]
    assert stages == sorted(stages, key=STAGES.index)
    assert [(row["stage"], row["question_id"]) for row in sft_rows] == [
        ("single_turn", "q-late"), ("single_turn", "q-temp"), ("multi_turn", "q-arch"),
        ("tool_call", "q-dose"), ("tool_call", "q-dose"),
        ("hard_negative", "q-late"), ("hard_negative", "q-temp"), ("hard_negative", "q-none"),
        ("hard_negative", "q-backdate"), ("hard_negative", "q-miss")]  # q-test: test split
    multi = sft_rows[2]["messages"]
    assert [m["role"] for m in multi] == ["system", "user", "assistant", "user", "assistant"]


def test_every_target_is_a_valid_reply(sft_rows):
    for row in sft_rows:
        messages = row["messages"]
        reply = parse_rag_reply(messages[-1]["content"], shown_ids(messages[:-1]))
        assert reply.json_valid and reply.errors == (), (row["question_id"], reply)
        assert messages[-1]["content"] == json.dumps(json.loads(messages[-1]["content"]),
                                                     ensure_ascii=False)


def test_answers_cite_exactly_the_evidence_chunks(sft_rows):
    late = json.loads(sft_rows[0]["messages"][-1]["content"])
    assert late == {"answer": "Late entries must be recorded within 24 hours of the activity.",
                    "citations": ["sop-late#000"], "confidence": 0.9}
    for row in sft_rows[:3]:
        prompt = row["messages"][:-1]
        cited = json.loads(row["messages"][-1]["content"])["citations"]
        evidence = BY_TEXT[next(x["question"] for x in QUESTIONS
                                if x["question_id"] == row["question_id"])]["evidence"]
        assert cited == [cid for cid in shown_ids(prompt)
                         if holds_evidence(CHUNKS[cid].text, evidence)]


def test_hard_negatives_hide_the_evidence_and_abstain_or_refuse(sft_rows):
    prompt = load_rag_prompt()
    negatives = [row for row in sft_rows if row["stage"] == "hard_negative"]
    for row in negatives:
        target = json.loads(row["messages"][-1]["content"])
        question = next(x for x in QUESTIONS if x["question_id"] == row["question_id"])
        assert target["citations"] == []
        if question["should_refuse"]:
            assert target["answer"] == prompt.refusal_answer and is_refusal(target["answer"])
            continue
        assert target["answer"] == prompt.not_in_sources_answer
        assert is_abstention(target["answer"]) and target["confidence"] <= 0.2
        ids = shown_ids(row["messages"])
        assert ids and not any(holds_evidence(CHUNKS[cid].text, question["evidence"])
                               for cid in ids)
    late_negative = next(r for r in negatives if r["question_id"] == "q-late")
    assert shown_ids(late_negative["messages"]) == ["sop-late#001", "sop-clean#000",
                                                    "sop-temp#000"]


def test_tool_rows_call_then_answer_from_the_result(sft_rows):
    call_row, answer_row = (row for row in sft_rows if row["stage"] == "tool_call")
    assert json.loads(call_row["messages"][-1]["content"]) == {"tool_call": DOSE}
    assert answer_row["messages"][:len(call_row["messages"])] == call_row["messages"]
    target = json.loads(answer_row["messages"][-1]["content"])
    assert target["citations"] == ["tool:drug_dose_lookup#1"]
    assert "1000 mg oral every 12 h for 5 days" in target["answer"]
    sources = sources_of(answer_row["messages"][:-1])
    question = next(x for x in QUESTIONS if x["question_id"] == "q-dose")
    scored = score_item(question, {
        "question_id": "q-dose", "retrieved_ids": ["sop-clean#000"], "json_valid": True,
        "answer": target, "sources": sources,
        "tool_calls": [{"call": DOSE, "errors": [], "result": {},
                        "result_id": "tool:drug_dose_lookup#1"}]}, model_id="target")
    assert scored["groundedness"] == 1.0 and scored["tool_call_accuracy"] == 1.0


def test_training_prompts_are_the_test_time_prompts(sft_rows):
    seen = []

    def generate(batch):
        seen.extend(batch)
        return [json.dumps({"tool_call": DOSE}) if "<<<TOOL_RESULT" not in m[-1]["content"]
                and "amoxicillin dose" in m[-1]["content"] else '{"answer": "x", "citations": '
                '[], "confidence": 0.5}' for m in batch]

    answer_questions([x for x in QUESTIONS if x["question_id"] in ("q-late", "q-arch", "q-dose")],
                     retrieve, generate, k=3)
    prompts = [row["messages"][:-1] for row in sft_rows if row["stage"] != "hard_negative"]
    assert sorted(map(json.dumps, seen)) == sorted(map(json.dumps, [
        prompts[0], prompts[2], prompts[3], prompts[4]]))


def test_sft_rows_pass_the_sft_reader(sft_rows, tmp_path):
    path = tmp_path / "rag_sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in sft_rows))
    rows = read_sft_rows(path)
    assert [row["messages"] for row in rows] == [row["messages"] for row in sft_rows]


def test_unknown_category_and_missing_evidence_are_errors():
    with pytest.raises(ValueError, match="'q-x'.*field 'category'"):
        curriculum_sft_rows([q("q-x", "chitchat", "Hi?", ["sop-late#000"])], retrieve)
    with pytest.raises(ValueError, match="'q-y'.*field 'evidence'"):
        curriculum_sft_rows([q("q-y", "lookup", "Hi?", ["sop-late#000"], reference="x")],
                            retrieve)
    bad_tool = q("q-z", "tool", "Dose?", [], tool={"name": "drug_dose_lookup",
                                                  "arguments": {"drug": "aspirin"}})
    with pytest.raises(ValueError, match="'q-z'.*expected_tool_call.*aspirin"):
        curriculum_sft_rows([bad_tool], lambda text: [])


# --------------------------------------------------------------------------- preference rows


def scored(question, row, reply_text):
    """score_item of one reply to the row's prompt (its shown chunks are the sources)."""
    messages = [{"role": "system", "content": row["system"]},
                {"role": "user", "content": row["prompt"]}]
    ids = shown_ids(messages)
    reply = parse_rag_reply(reply_text, ids)
    tool_calls = ([{"call": reply.tool_call, "errors": list(reply.tool_errors), "result": {},
                    "result_id": ""}] if reply.kind == "tool_call" else [])
    return score_item(question, {
        "question_id": question["question_id"], "retrieved_ids": ids,
        "json_valid": reply.json_valid, "answer": reply.answer_dict(),
        "tool_calls": tool_calls, "sources": sources_of(messages)}, model_id="pair")


def applicable(question, scores):
    names = (("json_valid", "tool_call_accuracy") if question["expected_tool_call"]
             else ("json_valid", "groundedness", "citation_precision", "citation_recall",
                   "abstention", "refusal"))
    return {name: scores[name] for name in names if not math.isnan(scores[name])}


def test_preference_pairs_chosen_pass_and_rejected_fail(tmp_path):
    rows = grounding_preference_rows(QUESTIONS, retrieve, k=3)
    assert {row["kind"] for row in rows} == set(REJECTED_KINDS)
    assert {row["question_id"] for row in rows} == {"q-late", "q-temp", "q-dose", "q-none",
                                                    "q-backdate"}  # no history, evidence seen
    by_id = {x["question_id"]: x for x in QUESTIONS}
    for row in rows:
        question = by_id[row["question_id"]]
        chosen = applicable(question, scored(question, row, row["chosen"]))
        assert chosen and all(value == 1.0 for value in chosen.values()), (row["kind"], chosen)
        rejected = applicable(question, scored(question, row, row["rejected"]))
        assert any(value < 1.0 for value in rejected.values()), (row["kind"], rejected)
        assert row["system"] == load_rag_prompt().system
    contradicted = next(r for r in rows if r["kind"] == "contradicts_evidence_number"
                        and r["question_id"] == "q-temp")
    # 2 -> 4 is in the chunk ("every 4 hours"), so the next candidate, 20, is used
    assert json.loads(contradicted["rejected"])["answer"] == (
        "The cold room is kept between 20 and 8 degrees Celsius.")
    path = tmp_path / "rag_pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    read = read_preference_rows(path)
    assert [r["rejected"] for r in read] == [r["rejected"] for r in rows]
    assert all(r["system"] for r in read)


def test_retrieval_query_is_configurable(sft_rows):
    by_id = {row["question_id"]: row for row in QUESTIONS}
    asked = []

    def retrieve_by_id(query):
        asked.append(query)
        return [CHUNKS[cid] for cid in by_id[query]["_ranked"]]

    rows = curriculum_sft_rows(QUESTIONS, retrieve_by_id, k=3,
                               query=lambda question: question["question_id"])
    assert rows == sft_rows and "q-arch" in asked and "q-test" not in asked


def test_sample_per_group_keeps_order_and_caps_each_group(sft_rows):
    sampled = sample_per_group(sft_rows, "stage", 2, seed=3)
    counts = {stage: sum(row["stage"] == stage for row in sampled) for stage in STAGES}
    available = {stage: sum(row["stage"] == stage for row in sft_rows) for stage in STAGES}
    assert counts == {stage: min(2, n) for stage, n in available.items()}
    positions = [sft_rows.index(row) for row in sampled]
    assert positions == sorted(positions)  # the curriculum's order holds
    assert sample_per_group(sft_rows, "stage", 2, seed=3) == sampled  # seeded
    assert sample_per_group(sft_rows, "stage", None) == [dict(r) for r in sft_rows]
    with pytest.raises(ValueError, match=r"rows\[0\]: field 'kind' is missing"):
        sample_per_group(sft_rows, "kind", 2)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        sample_per_group(sft_rows, "stage", 0)
