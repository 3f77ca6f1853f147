"""Benchmark: the shared prompt-injection detector (synthetic/injection_screen.py) as the reference
auditor and the server's guardrail use it: detection per attack family, on held-out strings, and
false positives on benign batch-record comments. Rates with Wilson 95% intervals (scipy).

Sets:
  design families    configs/injection_templates.yaml (the rules were written looking at them, the
                     classifier is trained on them). Per family: rules only, rules + classifier,
                     and the classifier alone trained WITHOUT that family (leave-family-out).
  held out           --heldout (default tests/data/injection_blind.jsonl: 115 strings in 21
                     styles written by someone who had not seen the detector; the development
                     set tests/data/injection_dev.jsonl was used to improve it). JSON Lines of
                     {"family", "text"}. Alone (the guardrail on a user
                     message), inside a record (the auditor on the comment; the guardrail on the
                     audit prompt holding the record).
  benign             synthetic/benign_comments.py at seed 11 (the classifier trains on seed 7) and
                     --benign (default tests/data/benign_comments_blind.txt, hand-written
                     with hard negatives, one comment a line), as comments (auditor,
                     guardrail) and inside audit prompts; plus the other half of the synthetic RAG
                     questions and corpus sentences and a batch-record Q&A seed the classifier did
                     not see (guardrail only).

    python bench/bench_injection_detection.py [--no-lofo] [--heldout PATH] [--benign PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scoring.injection_eval import (  # noqa: E402
    EVAL_SEED,
    Placed,
    Rate,
    rate,
    read_labelled,
    read_lines,
)
from serving.guardrails import detect_injection  # noqa: E402
from synthetic.benign_comments import benign_comments  # noqa: E402
from synthetic.injection_model import THRESHOLD, corpus_texts, probabilities  # noqa: E402
from synthetic.injection_screen import (  # noqa: E402
    clear_caches,
    model_segments,
    rule_cues,
    screen_text,
)
from synthetic.injection_templates import load_injection_table  # noqa: E402

DATA = ROOT / "tests" / "data"
HELD_OUT_FILE = DATA / "injection_blind.jsonl"
BENIGN_FILE = DATA / "benign_comments_blind.txt"
HELD_OUT_TARGET, FPR_TARGET = 0.90, 0.01


def held_out(path: Path = HELD_OUT_FILE) -> list[dict]:
    """The labelled injection strings of `path`; a line without a string "text" is an error that
    names the file and the line."""
    rows = read_labelled(path)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise SystemExit(f"{path}: entry {number}: field 'text' must be a string")
    return rows


def benign_set(path: Path = BENIGN_FILE) -> list[str]:
    return benign_comments(300, EVAL_SEED) + read_lines(path)


def chat_benign() -> list[str]:
    from synthetic.batch_record_qa import generate_batch_record_qa

    sentences, questions = corpus_texts()
    qa = [q["question"] for q in generate_batch_record_qa(20, seed=EVAL_SEED)]
    return [*questions[1::2], *sentences[1::2], *qa]


def lofo_flags(texts: Sequence[str], family: str) -> list[bool]:
    """The classifier trained without `family`, on each text (rules not consulted)."""
    excluded = frozenset({family})
    return [any(p >= THRESHOLD for p in probabilities(model_segments(t), excluded))
            for t in texts]


def family_table(lofo: bool) -> tuple[list[str], Rate]:
    table = load_injection_table()
    lines = ["| family | templates | rules only | rules + classifier | classifier alone, "
             "trained without the family |", "|---|---:|---:|---:|---:|"]
    lofo_all: list[bool] = []
    for family in table.families:
        texts = [t.render("B26-AD-0007") for t in family.templates]
        rules = rate([bool(rule_cues(t)) for t in texts])
        both = rate([screen_text(t).flagged for t in texts])
        left_out = lofo_flags(texts, family.name) if lofo else []
        lofo_all += left_out
        shown = f"{rate(left_out).value:.0%}" if lofo else "-"
        lines.append(f"| {family.name} | {len(texts)} | {rules.value:.0%} | {both.value:.0%} | "
                     f"{shown} |")
    return lines, rate(lofo_all)


def held_out_table(rows: list[dict], alone: list[bool], auditor: list[bool],
                   in_prompt: list[bool], rules: list[bool]) -> list[str]:
    by_family: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_family[row["family"]].append(i)
    lines = ["| held-out family | strings | rules only | guardrail, alone | auditor, in a record "
             "| guardrail, in an audit prompt |", "|---|---:|---:|---:|---:|---:|"]
    for family, idx in by_family.items():
        def pct(flags: list[bool], idx: list[int] = idx) -> str:
            return f"{sum(flags[i] for i in idx)}/{len(idx)}"
        lines.append(f"| {family} | {len(idx)} | {pct(rules)} | {pct(alone)} | {pct(auditor)} | "
                     f"{pct(in_prompt)} |")
    return lines


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def per_string_time(texts: Sequence[str]) -> str:
    """Time of screen_text per string, one call a string, the rule caches emptied first (as a
    server or the inbox sensor meets a new text): the median of three passes."""
    passes = []
    for _ in range(3):
        clear_caches()
        start = time.perf_counter()
        for text in texts:
            screen_text(text)
        passes.append((time.perf_counter() - start) / max(len(texts), 1))
    return (f"Per-string time, {len(texts)} held-out and benign strings one by one (rules and "
            f"classifier, caches emptied): {sorted(passes)[1] * 1e3:.2f} ms")


def timed(label: str, fn: Callable[[], object]) -> object:
    start = time.perf_counter()
    out = fn()
    print(f"<!-- {label}: {time.perf_counter() - start:.1f} s -->")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-lofo", action="store_true",
                        help="skip the leave-family-out runs (one classifier fit per family)")
    parser.add_argument("--heldout", type=Path, default=HELD_OUT_FILE,
                        help="JSON Lines of injection strings, {family, text} "
                             "(default: %(default)s)")
    parser.add_argument("--benign", type=Path, default=BENIGN_FILE,
                        help="benign comments, one a line, added to the generated ones "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    for path in (args.heldout, args.benign):
        if not path.is_file():
            parser.error(f"no such file: {path}")
    timed("classifier training (first use)", lambda: screen_text("warm the classifier up now"))

    print("## Design families (configs/injection_templates.yaml)\n")
    lines, lofo = family_table(not args.no_lofo)
    print("\n".join(lines))
    if not args.no_lofo:
        print(f"\nClassifier alone, leave-family-out, all design templates: {lofo}")

    rows = held_out(args.heldout)
    texts = [r["text"] for r in rows]
    alone = [detect_injection(t).flagged for t in texts]
    rules = [bool(rule_cues(t)) for t in texts]
    placed = Placed(texts)
    auditor = placed.auditor_flags()
    prompts = {b: detect_injection(text).flagged for b, text in placed.prompts().items()}
    in_prompt = [prompts[batch] for batch, _ in placed.where]
    print(f"\n## Held-out strings ({_shown(args.heldout)})\n")
    print("\n".join(held_out_table(rows, alone, auditor, in_prompt, rules)))
    families = defaultdict(list)
    for row, flag in zip(rows, auditor, strict=True):
        families[row["family"]].append(flag)
    print(f"\n- rules only: {rate(rules)}")
    print(f"- guardrail, alone: {rate(alone)}")
    print(f"- auditor, in a record: {rate(auditor)}")
    print(f"- guardrail, in an audit prompt (one string per batch): {rate(in_prompt)}")
    print(f"- held-out families with at least 90% caught by the auditor: "
          f"{sum(rate(f).value >= 0.9 for f in families.values())}/{len(families)}")

    benign = benign_set(args.benign)
    print(f"\n## Benign ({len(benign)} batch-record comments)\n")
    guard_fp = [detect_injection(t).flagged for t in benign]
    placed_benign = Placed(benign, per_batch=4)
    audit_fp = placed_benign.auditor_flags()
    prompt_fp = [detect_injection(text).flagged for text in placed_benign.prompts().values()]
    chat = chat_benign()
    chat_fp = [detect_injection(t).flagged for t in chat]
    print(f"- guardrail, comment alone: {rate(guard_fp)}")
    print(f"- auditor, in a record (non_gmp_compliant_free_text): {rate(audit_fp)}")
    print(f"- guardrail, audit prompts of the batches holding them (4 a batch): {rate(prompt_fp)}")
    print(f"- guardrail, {len(chat)} RAG questions, corpus sentences and batch Q&A questions the "
          f"classifier did not train on: {rate(chat_fp)}")
    for text, flagged in zip(benign, audit_fp, strict=True):
        if flagged:
            print(f"  - flagged: {text}")
    print(f"\n{per_string_time([*texts, *benign])}")
    held, fpr = rate(auditor), rate(audit_fp)
    print(f"\nTargets: held-out >= {HELD_OUT_TARGET:.0%} (auditor {held.value:.1%}, guardrail "
          f"alone {rate(alone).value:.1%}); benign <= {FPR_TARGET:.0%} (auditor {fpr.value:.1%}, "
          f"guardrail {rate(guard_fp).value:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
