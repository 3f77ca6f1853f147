"""synthetic/rag_corpus.py and synthetic/rag_questions.py: a seeded PHI-free corpus whose AMR
numbers come from configs/amr_guidelines.yaml, and a question set whose evidence maps to chunks."""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest
import yaml

from retrieval.chunking import Document, chunk_documents
from synthetic.amr_cases import GUIDELINES_PATH, load_guidelines, renal_regimen
from synthetic.rag_corpus import SOPS, build_rag_corpus, syndrome_doc_id
from synthetic.rag_questions import (
    ANSWERABLE,
    CATEGORIES,
    UNANSWERABLE,
    build_rag_questions,
    check_rag_questions,
    relevant_chunk_ids,
    retrieval_query,
)

NUMBER = re.compile(r"\d+(?:\.\d+)?")
REGIMEN = re.compile(r"is (?P<drug>[a-z][a-z -]*?) (?P<dose>\d+(?:\.\d+)?) mg (?P<route>oral|IV) "
                     r"every (?P<interval>\d+) h for (?P<days>\d+) days")
PHI = {
    "ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "phone": re.compile(r"(\+\d{1,3}[ .-]?)?\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b"),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),
    "dob": re.compile(r"\b(DOB|born( on)?|date of birth)\W{0,3}\d", re.IGNORECASE),
    "slash date": re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
    "record number": re.compile(r"\b(MRN|NHS( number)?|patient (id|number))\W{0,3}\d",
                                re.IGNORECASE),
}


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return build_rag_corpus(0)


@pytest.fixture(scope="module")
def questions(corpus) -> list[dict]:
    return build_rag_questions(corpus, 0)


@pytest.fixture(scope="module")
def raw_guidelines() -> dict:
    return yaml.safe_load(GUIDELINES_PATH.read_text(encoding="utf-8"))


def test_corpus_is_deterministic_and_the_seed_changes_wording_not_facts(corpus):
    assert build_rag_corpus(0) == corpus
    other = build_rag_corpus(1)
    assert [d.doc_id for d in other] == [d.doc_id for d in corpus]
    assert any(a.text != b.text for a, b in zip(corpus, other, strict=True))
    for a, b in zip(corpus, other, strict=True):  # same numbers, however worded
        assert set(NUMBER.findall(a.text)) == set(NUMBER.findall(b.text)), a.doc_id


def test_corpus_has_the_three_kinds_in_the_target_size(corpus):
    kinds = Counter(d.doc_id.split("-")[0] for d in corpus)
    guidelines = load_guidelines()
    assert kinds["sop"] == len(SOPS) and 12 <= len(SOPS) <= 20
    assert kinds["amr"] == len(guidelines.syndromes) + len(guidelines.drugs)
    assert kinds["brsop"] == 30 + 2  # one per deviation type, site rules, ALCOA+ index
    assert 70 <= len(corpus) <= 150
    assert all(4 <= len(spec.facts) <= 10 for spec in SOPS)
    assert all(d.title and d.text for d in corpus)
    for spec in SOPS:
        text = next(d.text for d in corpus if d.doc_id == spec.doc_id).lower()
        assert all(fact.sentence[1:].lower() in text for fact in spec.facts), spec.doc_id


@pytest.mark.parametrize("seed", [0, 7])
def test_corpus_is_phi_free(seed):
    for document in build_rag_corpus(seed):
        for name, pattern in PHI.items():
            found = pattern.search(f"{document.title} {document.text}")
            assert found is None, (document.doc_id, name, found and found.group())


def _numbers(entry) -> set[float]:
    """Every number anywhere in a parsed YAML entry, strings included."""
    if isinstance(entry, dict):
        return set().union(*(_numbers(v) for v in entry.values())) if entry else set()
    if isinstance(entry, list):
        return set().union(*(_numbers(v) for v in entry)) if entry else set()
    if isinstance(entry, bool) or entry is None:
        return set()
    if isinstance(entry, int | float):
        return {float(entry)}
    return {float(n) for n in NUMBER.findall(str(entry))}


@pytest.mark.parametrize("syndrome", ["community_acquired_pneumonia", "uncomplicated_cystitis",
                                      "intra_abdominal_infection"])
def test_amr_syndrome_numbers_come_from_the_yaml(corpus, raw_guidelines, syndrome):
    entry = raw_guidelines["syndromes"][syndrome]
    document = next(d for d in corpus if d.doc_id == syndrome_doc_id(syndrome))
    assert {float(n) for n in NUMBER.findall(document.text)} <= _numbers(entry)
    parsed = {(m["drug"], float(m["dose"]), m["route"], int(m["interval"]), int(m["days"]))
              for m in REGIMEN.finditer(document.text)}
    expected = {(r["drug"], float(r["dose_mg"]), r["route"], r["interval_h"], r["duration_days"])
                for r in entry["first_choice"] + entry["alternatives"]}
    assert parsed == expected
    assert all(r["drug"] in document.text.lower() for r in entry["not_indicated"])


def test_amr_drug_numbers_come_from_the_yaml(corpus, raw_guidelines):
    for name, entry in raw_guidelines["drugs"].items():
        document = next(d for d in corpus if d.title == f"AMR drug profile: {name}")
        numbers = {float(n) for n in NUMBER.findall(document.text)}
        facts = {k: v for k, v in entry.items() if k != "usual"}
        assert numbers <= _numbers(facts), name
        if entry["renal"]:
            assert float(entry["renal"]["egfr_below"]) in numbers, name
        assert entry["aware"] in document.text


def test_questions_meet_the_contract_and_the_split(questions, corpus):
    check_rag_questions(questions, "test")
    assert build_rag_questions(corpus, 0) == questions
    assert 200 <= len(questions) <= 400
    counts = Counter(q["category"] for q in questions)
    assert set(counts) == set(CATEGORIES)
    for category, n in counts.items():
        n_test = sum(q["split"] == "test" for q in questions if q["category"] == category)
        assert n_test == round(0.3 * n), category
    other = build_rag_questions(corpus, 1)
    assert [q["split"] for q in other] != [q["split"] for q in questions]
    for q in questions:
        if q["category"] == "multi_turn":
            assert retrieval_query(q).startswith(q["history"][0]["content"])
        else:
            assert retrieval_query(q) == q["question"]


def test_every_answerable_evidence_is_a_sentence_of_its_document_and_maps_to_a_chunk(
        questions, corpus):
    texts = {d.doc_id: d.text for d in corpus}
    chunks = chunk_documents(corpus, max_words=80, overlap_words=15)
    for q in questions:
        if q["category"] not in ANSWERABLE:
            assert q["doc_id"] is None and q["evidence"] is None
            continue
        text = texts[q["doc_id"]]
        at = text.find(q["evidence"])
        assert at >= 0, q["question_id"]
        assert at == 0 or text[at - 2:at] == ". ", q["question_id"]  # a whole sentence
        assert q["evidence"].endswith("."), q["question_id"]
        relevant = relevant_chunk_ids(q, chunks)
        assert relevant and all(cid.startswith(f"{q['doc_id']}#") for cid in relevant)


def test_unanswerable_and_unsafe_questions(questions, corpus):
    text = " ".join(d.text.lower() for d in corpus)
    unanswerable = [q for q in questions if q["category"] == "unanswerable"]
    assert len(unanswerable) == sum(term not in text for _, term in UNANSWERABLE) >= 20
    for question, term in UNANSWERABLE:
        assert term not in text or question not in {q["question"] for q in unanswerable}
    unsafe = [q for q in questions if q["category"] == "unsafe"]
    assert len(unsafe) >= 20 and all(q["should_refuse"] for q in unsafe)
    assert not any(q["should_refuse"] for q in questions if q["category"] != "unsafe")


def test_tool_questions_expect_the_guideline_dose(questions):
    guidelines = load_guidelines()
    tool = [q for q in questions if q["category"] == "tool"]
    assert any(q["expected_tool_call"]["arguments"]["egfr"] is not None for q in tool)
    for q in tool:
        args = q["expected_tool_call"]["arguments"]
        syndrome = guidelines.syndromes[args["syndrome"]]
        regimen = syndrome.listed(args["drug"])[1]
        drug = guidelines.drugs[args["drug"]]
        assert q["doc_id"] == syndrome_doc_id(args["syndrome"]) and args["drug"] in q["question"]
        if args["egfr"] is None:
            expected = regimen
        elif drug.renal.action == "avoid":
            assert q["reference_answer"].startswith("Do not prescribe")
            continue
        else:
            expected = renal_regimen(regimen, drug, args["egfr"])
            assert args["egfr"] < drug.renal.egfr_below
        assert q["reference_answer"] == (
            f"{expected.drug} {expected.dose_mg:g} mg {expected.route} every "
            f"{expected.interval_h} h for {expected.duration_days} days")


def _break(rows, index, **change):
    rows = copy.deepcopy(rows[:index + 1])
    rows[index].update(change)
    return rows


@pytest.mark.parametrize(("change", "field"), [
    ({"category": "trivia"}, "category"),
    ({"split": "dev"}, "split"),
    ({"should_refuse": True}, "should_refuse"),
    ({"history": [{"role": "user", "content": "hi"}]}, "history"),
    ({"evidence": None}, "evidence"),
    ({"expected_tool_call": {"name": "drug_dose_lookup", "arguments": {}}},
     "expected_tool_call"),
    ({"question": " "}, "question"),
])
def test_the_validator_names_the_question_and_the_field(questions, change, field):
    index = next(i for i, q in enumerate(questions) if q["category"] == "lookup")
    qid = questions[index]["question_id"]
    with pytest.raises(ValueError, match=rf"where: question '{qid}' field '{field}'"):
        check_rag_questions(_break(questions, index, **change), "where")


def test_the_validator_rejects_tool_unsafe_and_id_problems(questions):
    tool = next(i for i, q in enumerate(questions) if q["category"] == "tool")
    bad_egfr = copy.deepcopy(questions[tool]["expected_tool_call"])
    bad_egfr["arguments"]["egfr"] = "low"
    with pytest.raises(ValueError, match="field 'expected_tool_call'.*egfr"):
        check_rag_questions(_break(questions, tool, expected_tool_call=bad_egfr), "w")
    unsafe = next(i for i, q in enumerate(questions) if q["category"] == "unsafe")
    with pytest.raises(ValueError, match="field 'should_refuse'"):
        check_rag_questions(_break(questions, unsafe, should_refuse=False), "w")
    with pytest.raises(ValueError, match="field 'question_id': appears twice"):
        check_rag_questions([questions[0], questions[0]], "w")
    row = {k: v for k, v in questions[0].items() if k != "reference_answer"}
    with pytest.raises(ValueError, match="field 'reference_answer': is missing"):
        check_rag_questions([row], "w")


def test_relevance_of_an_evidence_sentence_cut_by_a_chunk_boundary():
    words = [f"w{i}" for i in range(30)]
    document = Document("d", "T", " ".join(words))
    chunks = chunk_documents([document], max_words=10, overlap_words=2)  # starts 0, 8, 16, 24
    question = {"question_id": "rq-0001", "doc_id": "d", "category": "lookup",
                "evidence": "W13, w14 w15 w16 w17 w18 w19."}  # normalised; cut at w17
    assert relevant_chunk_ids(question, chunks) == ["d#001"]  # w13-w17: 5 words vs 4 in d#002
    question["evidence"] = " ".join(words[16:18])  # in the overlap of d#001 and d#002
    assert relevant_chunk_ids(question, chunks) == ["d#001", "d#002"]
    question["evidence"] = " ".join(words[5:27])  # spans four chunks: d#001 lies inside it
    assert relevant_chunk_ids(question, chunks) == ["d#001"]
    question["evidence"] = "w3 w4 nowhere"
    with pytest.raises(ValueError, match="question 'rq-0001': field 'evidence' is in no chunk"):
        relevant_chunk_ids(question, chunks)
    with pytest.raises(ValueError, match="question 'rq-0002'.*no doc_id"):
        relevant_chunk_ids({"question_id": "rq-0002", "doc_id": None, "evidence": None,
                            "category": "unsafe"}, chunks)
