"""Benchmark: the JSON Lines readers on N generated records (default 100,000; the train split's
10,000 repeated).

Compares the one parser (`synthetic.jsonl.parse_json_line`: orjson, depth limit, duplicate keys
refused) with bare `orjson.loads` and the standard library's `json.loads`, and `read_records(path,
columns=())` with pyarrow's JSON reader (the id fast path the scorer used before; it segfaulted on
a file whose first line is `null`, so it is only run here, on a clean file).

    python bench/bench_readers.py [--records 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import pyarrow
import pyarrow.json

from scoring.data_files import read_records
from synthetic.jsonl import parse_json_line, read_jsonl, write_jsonl
from synthetic.master_data import build_site_master
from synthetic.splits import generate_split, load_dataset_config


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def each(fn: Callable[[object], object], items: Iterable) -> None:
    """Call fn on every item, keeping no result (a kept list would time the garbage collector)."""
    for item in items:
        fn(item)


def pyarrow_ids(path: Path) -> object:
    options = pyarrow.json.ParseOptions(
        explicit_schema=pyarrow.schema([("record_id", pyarrow.string()),
                                        ("batch_id", pyarrow.string())]),
        unexpected_field_behavior="ignore")
    return pyarrow.json.read_json(path, parse_options=options).to_pandas()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = load_dataset_config()
    train = generate_split(config.splits["train"], build_site_master(config.site_master,
                                                                     config.seed), config.seed)
    copies = -(-args.records // len(train.records))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        write_jsonl((r for _ in range(copies) for r in train.records), path)
        lines = path.read_bytes().splitlines()[: args.records]
        path.write_bytes(b"\n".join(lines) + b"\n")
        rows = [
            ("orjson.loads per line (floor)", lambda: each(orjson.loads, lines)),
            ("json.loads per line (stdlib)", lambda: each(json.loads, lines)),
            ("parse_json_line per line", lambda: each(parse_json_line, lines)),
            ("read_jsonl(path)", lambda: each(lambda row: row, read_jsonl(path))),
            ("pyarrow ids (old fast path)", lambda: pyarrow_ids(path)),
            ("read_records(path, columns=())", lambda: read_records(path, columns=())),
            ("read_records(path)", lambda: read_records(path)),
        ]
        timed = [(name, best_of(args.repeat, fn)) for name, fn in rows]
    floor = timed[0][1]
    print(f"records: {len(lines):,} ({path.name}, {sum(map(len, lines)) / 1e6:,.0f} MB)")
    print("| reader | seconds | records/s | x orjson.loads |")
    print("|---|---|---|---|")
    for name, seconds in timed:
        print(f"| {name} | {seconds:.2f} | {len(lines) / seconds:,.0f} | {seconds / floor:.1f} |")


if __name__ == "__main__":
    main()
