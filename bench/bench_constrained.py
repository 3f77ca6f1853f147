"""Benchmark: grammar-constrained generation (a JSON schema, xgrammar) against free generation.

Same model, same prompts, same greedy decoding, measured side by side in one run: for each
batch size (1 and 8) and each round, the prompts are generated free, then under the schema
(`LocalGenerator.generate(..., json_schemas=[schema] * n)`), back to back, so both see the same
load on the machine. Throughput is generated tokens per second (a constrained answer ends when
its JSON is complete, a free one at `--max-tokens` or end of sequence, so tokens/s, not seconds
per prompt, is what compares). One untimed warm-up of each (the grammar is compiled there and
cached). Printed: a table of median tokens/s (min-max over rounds), the ratio constrained / free
per round and its median, and how many constrained answers validate against the schema.

The model: `--base-model PATH`, else the embedded base model built from configs/base_model.yaml's
`embedded` settings into a temp folder (`--pretrain-steps` shortens its pretraining only; the
architecture, hence the speed, is the configured one). torch runs on one thread.

    .venv/bin/python bench/bench_constrained.py [--prompts 16] [--max-tokens 96] [--rounds 3]
                                                [--base-model PATH | --pretrain-steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is built here; nothing to download

from bench_serving import build_model  # noqa: E402  (the embedded base model, as configured)

SLUGS = [f"dev_{name}" for name in (
    "missing_qty", "late_entry", "unsigned_step", "wrong_unit", "out_of_range", "duplicate",
    "missing_lot", "expired_material", "bad_timestamp", "no_second_check")]
# Short keys (this tokenizer spends several tokens per key), an enum and integer bounds: the
# shape of an audit verdict.
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["d", "n", "f"],
          "properties": {"d": {"enum": ["approve", "modify", "reject"]},
                         "n": {"type": "integer", "minimum": 0, "maximum": 9},
                         "f": {"type": "array", "minItems": 1, "maxItems": 3,
                               "items": {"enum": SLUGS}}}}


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": "You are a GxP auditor. Answer with a JSON verdict."},
             {"role": "user", "content": f"Batch B26-{i:04d}, step {i % 24 + 1}: the charged "
                                         f"quantity of lot L-{i:03d} has no second signature."}]
            for i in range(n)]


def timed(generator, prompts, decoding, batch: int, schema) -> tuple[float, list]:
    """(tokens/s, generations) of one pass over the prompts."""
    schemas = [schema] * len(prompts) if schema is not None else None
    began = time.perf_counter()
    out = generator.generate(prompts, decoding, batch_size=batch, json_schemas=schemas)
    elapsed = time.perf_counter() - began
    return sum(g.completion_tokens for g in out) / elapsed, out


def valid(generations) -> int:
    import jsonschema

    count = 0
    for g in generations:
        try:
            jsonschema.validate(json.loads(g.text), SCHEMA)
            count += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return count


def run(base: Path, args: argparse.Namespace) -> None:
    from training.inference import DecodingSettings, LocalGenerator

    generator = LocalGenerator(base, torch_threads=1)
    prompts = chats(args.prompts)
    decoding = DecodingSettings(max_new_tokens=args.max_tokens)
    rows = []
    for batch in (1, 8):
        timed(generator, prompts[:batch], decoding, batch, None)  # warm-up (untimed)
        timed(generator, prompts[:batch], decoding, batch, SCHEMA)  # compiles the grammar
        free, constrained, ratios, ok = [], [], [], 0
        for _ in range(args.rounds):
            free_rate, _out = timed(generator, prompts, decoding, batch, None)
            rate, out = timed(generator, prompts, decoding, batch, SCHEMA)
            free.append(free_rate)
            constrained.append(rate)
            ratios.append(rate / free_rate)
            ok = valid(out)
        rows.append((batch, free, constrained, ratios, ok))
    print(f"\n{args.prompts} prompts, max_new_tokens {args.max_tokens}, greedy, {args.rounds} "
          "rounds; tokens/s median (min-max)\n")
    print("| batch | free tokens/s | constrained tokens/s | constrained / free | valid |")
    print("|---:|---:|---:|---:|---:|")
    for batch, free, constrained, ratios, ok in rows:
        print(f"| {batch} | {_cell(free)} | {_cell(constrained)} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{ok}/{args.prompts} |")
    print(f"\nload average after the run: {os.getloadavg()[0]:.1f} (1 min), "
          f"{os.cpu_count()} CPUs")


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base-model", type=Path, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.base_model:
        run(args.base_model, args)
        return
    with tempfile.TemporaryDirectory(prefix="gxplab-bench-constrained-") as folder:
        run(build_model(Path(folder) / "base_model", args.pretrain_steps), args)


if __name__ == "__main__":
    main()
