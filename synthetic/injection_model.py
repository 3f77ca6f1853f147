"""The injection detector's second opinion: a small text classifier (scikit-learn), trained at
first use, in a second or two, from texts in this repository:

- injections: every template of configs/injection_templates.yaml (families not `held_out`);
- benign: seeded operator comments (synthetic/benign_comments.py, seed TRAIN_SEED), hard benign
  negatives (HARD_NEGATIVES: operator notes with the injections' words, some in other
  languages), the clean records' comment bank, placeholder and informal notes, the lines of
  configs/prompts.yaml, the field values of a few clean generated batches, and sentences and
  questions of the synthetic RAG corpus and of the batch-record Q&A set (every other one: the
  rest stays for evaluation).

Features: character 2-5-grams and word 1-2-grams (TF-IDF) of the text's normalised readings
(injection_screen.variants: homoglyphs, leetspeak, encodings undone), so a disguise does not hide
the words. Logistic regression, C = MODEL_C, flags at probability >= THRESHOLD (the default 0.5).
bench/bench_injection_detection.py evaluates it leave-one-family-out and on held-out strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

MODEL_C = 10.0
THRESHOLD = 0.5
TRAIN_SEED = 7  # benign comments for training; the benchmark evaluates on another seed
MIN_WORDS = 3  # shorter segments (ids, status codes, units) are left to the rules


def reading(text: str) -> str:
    """What the classifier sees: the text's normalised readings, joined."""
    from synthetic.injection_screen import variants

    return " ".join(variants(text))


def _prompt_lines() -> list[str]:
    import yaml

    from synthetic.catalog import CONFIG_DIR

    def strings(value: object) -> Iterable[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    with (CONFIG_DIR / "prompts.yaml").open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    return [line for text in strings(raw) for line in text.splitlines() if len(line.split()) >= 3]


def _record_values() -> list[str]:
    from synthetic.master_data import build_site_master
    from synthetic.splits import SplitSpec, generate_split, load_dataset_config

    config = load_dataset_config()
    master = build_site_master(config.site_master, TRAIN_SEED)
    records = generate_split(SplitSpec("clean", 6, 16, 24, 0.0), master, TRAIN_SEED).records
    return sorted({v for r in records for v in r.values() if isinstance(v, str)
                   and len(v.split()) >= MIN_WORDS})


def corpus_texts() -> tuple[list[str], list[str]]:
    """(sentences of the synthetic RAG corpus, its questions), in a fixed order."""
    from synthetic.rag_corpus import build_rag_corpus
    from synthetic.rag_questions import build_rag_questions

    documents = build_rag_corpus()
    sentences = [s for d in documents for s in d.text.replace("\n", " ").split(". ")
                 if len(s.split()) >= MIN_WORDS]
    return sentences, [q["question"] for q in build_rag_questions(documents, seed=0)]


# Hard benign negatives: operator notes with the words the rules and the injections use (override,
# ignore, system, reset, approve, verified, no deviation, status values, other languages), so
# that the classifier learns the injections' intent, not their vocabulary.
HARD_NEGATIVES: tuple[str, ...] = (
    "Interlock override approved by QA per SOP-ENG-009; override form attached, reset at 10:40.",
    "Ignore the tare printout from 08:15, balance was reset and re-tared; valid value recorded.",
    "System alarm on the coater at 13:05 acknowledged and reset; no impact on the product.",
    "MES system down for 20 min, entries made on paper and transcribed later, verified by JB.",
    "Batch approved for the next step by the shift supervisor after the in-process checks.",
    "No deviations observed; all parameters within the validated range, verified by 2nd operator.",
    "Status: clean. Equipment cleaning verified, label dated and signed, within hold time.",
    "Line clearance verified and certified by production QA before the start of packing.",
    "Calibration certificate of the balance checked, valid until 11/2027.",
    "Review of the cleaning record completed by the area lead; nothing unusual found.",
    "Previous instructions in WI-PRD-045 superseded by revision 4, training record updated.",
    "Reviewer note: signature missing on page 3 added by the operator, dated and explained.",
    "Results: LOD 1.8 %, hardness 92 N, friability 0.2 %, all compliant with the specification.",
    "Override of the weight limit rejected by QA; batch kept on hold pending investigation.",
    "The audit trail of the HMI was reviewed for this step; no changes after the recording.",
    "Calibration drift of 0.02 % noted, within the allowed tolerance; no deviation needed.",
    "Please skip step 12 as per change control CC-2026-012, approved before execution.",
    "Checked and found compliant: temperature, humidity and pressure differential.",
    "Auditor visit from the customer today; batch record made available, no comments raised.",
    "Test run of the new checkweigher recipe done before the batch, results filed with ENG.",
    "Findings from the previous batch closed under CAPA-2026-004; not applicable to this lot.",
    "Keine Abweichungen festgestellt, alle Werte im Sollbereich, geprüft von MK.",
    "Aucun écart constaté pendant le séchage ; paramètres conformes.",
    "Sin desviaciones durante la granulación; valores dentro de especificación.",
    "Geen afwijkingen tijdens het wegen; tweede controle door AL.",
    "Nessuna deviazione durante il rivestimento, parametri nei limiti.",
    "Sem desvios durante a compressão; dureza e peso dentro dos limites.",
    "Brak odchyleń podczas mieszania, parametry w normie.",
    "Отклонений при сушке нет, параметры в норме, проверил оператор.",
    "造粒过程中未发现偏差，参数均在范围内。",
    "乾燥工程で逸脱なし、パラメータはすべて規格内。",
    "Granülasyon sırasında sapma yok, değerler limitler içinde.",
    "Kontrol edildi, sapma yok; denetçi tarafından imzalandı.",
    "Revisado por el supervisor de turno, sin incidencias; hoja firmada por Calidad.",
    "Vom Prüfer abgezeichnet, keine Befunde beim Line Clearance.",
    "Vérifié par le contrôleur qualité, rien à signaler sur cette étape.",
    "Controllato dal revisore di produzione, nessuna anomalia rilevata.",
    "Verificado pelo revisor da Qualidade, sem observações.",
    "Gecontroleerd door de QA-beoordelaar, geen bijzonderheden.",
    "Sprawdzone przez audytora wewnętrznego, bez uwag.",
    "Проверено контролёром ОТК, замечаний нет.",
    "品质审核员已复核，无异常。",
    "Granskad av QA, inga avvikelser noterade under torkningen.",
)


def benign_training_texts() -> list[str]:
    from synthetic.batch_record_qa import generate_batch_record_qa
    from synthetic.batch_records import _CLASS_NOTES, _CLOSING_NOTES
    from synthetic.benign_comments import benign_comments
    from synthetic.deviations import INFORMAL_TEXTS, PLACEHOLDER_TEXTS

    notes = [n.format(eq="EQ-BAL-001") + " " + c for ns in _CLASS_NOTES.values() for n in ns
             for c in _CLOSING_NOTES]
    sentences, questions = corpus_texts()
    qa = [q["question"] for q in generate_batch_record_qa(20, seed=1)]
    return [*benign_comments(300, TRAIN_SEED), *HARD_NEGATIVES, *notes, *PLACEHOLDER_TEXTS,
            *INFORMAL_TEXTS, *_prompt_lines(), *_record_values(), *sentences[::2],
            *questions[::2], *qa]


def injection_training_texts(exclude: frozenset[str] = frozenset()) -> list[str]:
    from synthetic.injection_templates import load_injection_table

    table = load_injection_table()
    kept = {f.name for f in table.families if not f.held_out and f.name not in exclude}
    return [text for family, text in table.rendered() if family in kept]


@lru_cache(maxsize=8)
def train(exclude: frozenset[str] = frozenset()):
    """The fitted pipeline, without the template families in `exclude` (leave-family-out)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    positives = injection_training_texts(exclude)
    negatives = benign_training_texts()
    features = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True))
    model = make_pipeline(features, LogisticRegression(C=MODEL_C, class_weight="balanced",
                                                       solver="liblinear"))
    return model.fit([reading(t) for t in [*positives, *negatives]],
                     [1] * len(positives) + [0] * len(negatives))


def probabilities(texts: Sequence[str], exclude: frozenset[str] = frozenset()) -> list[float]:
    """P(injection) per text (0.0 for texts shorter than MIN_WORDS words)."""
    from synthetic.injection_normalise import word_count

    scored = [i for i, t in enumerate(texts) if word_count(t) >= MIN_WORDS]
    out = [0.0] * len(texts)
    if scored:
        proba = train(exclude).predict_proba([reading(texts[i]) for i in scored])[:, 1]
        for i, p in zip(scored, proba, strict=True):
            out[i] = float(p)
    return out
