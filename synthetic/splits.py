"""Split generation: clean batches + planned deviations, streamed in chunks of batches.

A split is planned once (batch layouts and which record gets which deviation type; memory
O(batches + deviations)) and then generated batch by batch, each batch from its own RNG derived
from (seed, split name, batch index). So `iter_split_chunks` yields exactly the records of
`generate_split`, in the same order, whatever the chunk size.

Deviation plan:
- count = round(deviation_rate x n_records) distinct records (every record with
  every_record_deviates; at least one per batch with prompt_injection, see README);
- the types are the catalog's slugs in consecutive seeded shuffles, so every type is present
  once count >= 30; a type that cannot be placed (e.g. future_timestamp needs a batch's last step)
  falls back to a type that applies anywhere;
- placement goes from the most constrained types to the least (structural first, since they move
  materials between positions), each on a random free position where the injector's rule holds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthetic.batch_records import GenContext, generate_clean_batch
from synthetic.catalog import CONFIG_DIR, DeviationCatalog, load_catalog
from synthetic.deviations import (
    INJECTORS,
    STRUCTURAL,
    UNIVERSAL,
    Skeleton,
    check_catalog,
    inject,
    inject_prompt,
)
from synthetic.master_data import derive_seed

SPLIT_PREFIXES = {"benchmark": "BM", "control_clean": "CC", "control_faulty": "CF",
                  "adversarial": "AD", "train": "TR"}
_COMMENT_TYPES = frozenset({"placeholder_text_in_notes", "empty_notes_field",
                            "non_gmp_compliant_free_text", "misspelled_field_name"})


@dataclass(frozen=True)
class SplitSpec:
    name: str
    n_batches: int
    steps_min: int
    steps_max: int
    deviation_rate: float
    every_record_deviates: bool = False
    prompt_injection: bool = False


@dataclass(frozen=True)
class DatasetConfig:
    seed: int
    site_master: dict
    splits: dict[str, SplitSpec]


@dataclass
class GeneratedSplit:
    records: list[dict] = field(default_factory=list)
    manifest: list[dict] = field(default_factory=list)


def load_dataset_config(path: str | Path | None = None) -> DatasetConfig:
    """Read configs/datasets.yaml (or another file of the same shape)."""
    path = Path(path) if path else CONFIG_DIR / "datasets.yaml"
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    splits = {}
    for name, s in raw["splits"].items():
        steps = s.get("steps_per_batch", {})
        splits[name] = SplitSpec(
            name=name,
            n_batches=int(s["n_batches"]),
            steps_min=int(steps.get("min", 16)),
            steps_max=int(steps.get("max", 24)),
            deviation_rate=float(s.get("deviation_rate", 0.0)),
            every_record_deviates=bool(s.get("every_record_deviates", False)),
            prompt_injection=bool(s.get("prompt_injection", False)),
        )
    return DatasetConfig(seed=int(raw["seed"]), site_master=dict(raw["site_master"]), splits=splits)


def split_prefix(name: str) -> str:
    if name in SPLIT_PREFIXES:
        return SPLIT_PREFIXES[name]
    words = [w for w in name.replace("-", "_").split("_") if w]
    prefix = "".join(w[0] for w in words) if len(words) > 1 else name[:2]
    return "".join(c for c in prefix.upper() if c.isalnum()) or "SP"


def deviation_count(spec: SplitSpec, n_records: int) -> int:
    """Records that carry an injected (ordinary) deviation."""
    count = n_records if spec.every_record_deviates else round(spec.deviation_rate * n_records)
    if spec.prompt_injection:
        count = max(count, spec.n_batches)  # each adversarial batch has an ordinary one too
    return min(count, n_records)


@dataclass
class SplitPlan:
    spec: SplitSpec
    seed: int
    recipe_index: list[int]
    n_steps: list[int]
    offsets: list[int]
    n_records: int
    deviations: dict[int, dict[int, str]]  # batch -> position -> slug
    prompt_positions: dict[int, int]  # batch -> position of the prompt-injection comment


def _layouts(spec: SplitSpec, recipes: list[dict], rng: random.Random):
    lengths = [len(r["steps"]) for r in recipes]
    eligible = [i for i, n in enumerate(lengths) if spec.steps_min <= n <= spec.steps_max]
    longer = [i for i, n in enumerate(lengths) if n >= spec.steps_min]
    if not eligible and not longer:
        raise ValueError(f"split {spec.name!r}: no master recipe has >= {spec.steps_min} steps")
    recipe_index, n_steps = [], []
    for _ in range(spec.n_batches):
        if eligible:  # whole recipes whose length is inside [min, max]
            i = eligible[int(rng.random() * len(eligible))]
            n = lengths[i]
        else:  # otherwise the first n phases of a longer recipe
            i = longer[int(rng.random() * len(longer))]
            n = rng.randint(spec.steps_min, min(spec.steps_max, lengths[i]))
        recipe_index.append(i)
        n_steps.append(n)
    return recipe_index, n_steps


def _priority(slug: str) -> int:
    inj = INJECTORS[slug]
    if inj.structural:
        return 0
    if inj.last_only:
        return 1
    if inj.plan_extra is not None and inj.needs_material:
        return 2
    if inj.needs_material:
        return 3
    if inj.min_pos:
        return 4
    return 5


def plan_split(spec: SplitSpec, master: dict, seed: int,
               catalog: DeviationCatalog | None = None) -> SplitPlan:
    catalog = catalog or load_catalog()
    check_catalog(catalog)
    rng = random.Random(derive_seed(seed, spec.name, "plan"))
    recipes = master["recipes"]
    recipe_index, n_steps = _layouts(spec, recipes, rng)
    offsets, total = [], 0
    for n in n_steps:
        offsets.append(total)
        total += n
    count = deviation_count(spec, total) if spec.n_batches else 0

    slugs = list(catalog.slugs)
    universal = [s for s in slugs if s in UNIVERSAL]
    seq: list[str] = []
    while len(seq) < count:
        block = slugs[:]
        rng.shuffle(block)
        seq.extend(block)
    seq = seq[:count]
    order = sorted(range(count), key=lambda k: (_priority(seq[k]), k))

    skeletons: dict[int, Skeleton] = {}
    free = list(n_steps)

    def skeleton(b: int) -> Skeleton:
        sk = skeletons.get(b)
        if sk is None:
            steps = recipes[recipe_index[b]]["steps"][: n_steps[b]]
            sk = skeletons[b] = Skeleton(
                materials=[s["materials"][0] if s["materials"] else None for s in steps], plan={})
        return sk

    def try_place(b: int, slug: str) -> bool:
        if not free[b]:
            return False
        sk = skeleton(b)
        inj = INJECTORS[slug]
        cands = [p for p in range(sk.n) if p not in sk.plan and inj.plan_ok(sk, p)]
        if not cands:
            return False
        p = cands[int(rng.random() * len(cands))]
        sk.plan[p] = slug
        free[b] -= 1
        if slug == "unexpected_step_order":
            sk.materials[p - 1], sk.materials[p] = sk.materials[p], sk.materials[p - 1]
        elif slug == "redundant_step":
            sk.materials[p] = sk.materials[p - 1]
        return True

    cum = []
    acc = 0
    for n in n_steps:
        acc += n
        cum.append(acc)
    uncovered = list(range(spec.n_batches)) if spec.prompt_injection else []
    rng.shuffle(uncovered)
    exhaustive = spec.every_record_deviates or count > total // 2

    def place(slug: str) -> bool:
        if uncovered:
            for j, b in enumerate(uncovered):
                if try_place(b, slug):
                    del uncovered[j]
                    return True
        if exhaustive:
            batches = [b for b in range(spec.n_batches) if free[b]]
            rng.shuffle(batches)
            return any(try_place(b, slug) for b in batches)
        for _ in range(64):
            b = rng.choices(range(spec.n_batches), cum_weights=cum)[0]
            if try_place(b, slug):
                return True
        return False

    for k in order:
        slug = seq[k]
        if place(slug):
            continue
        fallbacks = universal[:]
        rng.shuffle(fallbacks)
        if not any(place(s) for s in fallbacks):
            raise RuntimeError(f"split {spec.name!r}: could not place deviation {k} ({slug})")

    deviations = {b: dict(sorted(sk.plan.items()))
                  for b, sk in sorted(skeletons.items()) if sk.plan}
    prompt_positions: dict[int, int] = {}
    if spec.prompt_injection:
        for b in range(spec.n_batches):
            plan_b = deviations.get(b, {})
            cands = [p for p in range(n_steps[b]) if p not in plan_b]
            if not cands:
                cands = [p for p, s in plan_b.items()
                         if s not in _COMMENT_TYPES and s not in STRUCTURAL]
            prompt_positions[b] = cands[int(rng.random() * len(cands))]
    return SplitPlan(spec=spec, seed=seed, recipe_index=recipe_index, n_steps=n_steps,
                     offsets=offsets, n_records=total, deviations=deviations,
                     prompt_positions=prompt_positions)


def _generate_batches(plan: SplitPlan, ctx: GenContext, catalog: DeviationCatalog,
                      start: int, stop: int) -> GeneratedSplit:
    spec = plan.spec
    universal = [s for s in catalog.slugs if s in UNIVERSAL]
    out = GeneratedSplit()
    for b in range(start, stop):
        st = generate_clean_batch(ctx, b, plan.recipe_index[b], plan.n_steps[b], plan.offsets[b],
                                  random.Random(derive_seed(plan.seed, spec.name, "batch", b)))
        plan_b = plan.deviations.get(b)
        prompt_p = plan.prompt_positions.get(b)
        if plan_b or prompt_p is not None:
            irng = random.Random(derive_seed(plan.seed, spec.name, "inject", b))
            rows: list[tuple[int, dict]] = []
            plan_b = plan_b or {}
            for p, slug in plan_b.items():
                if slug in STRUCTURAL:
                    rows.append((p, inject(st, p, slug, irng, catalog)))
            positions = sorted({p for p, s in plan_b.items() if s not in STRUCTURAL}
                               | ({prompt_p} if prompt_p is not None else set()))
            for p in positions:
                slug = plan_b.get(p)
                if slug is not None and slug not in STRUCTURAL:
                    if not INJECTORS[slug].applies(st, p):
                        options = universal[:]
                        irng.shuffle(options)
                        slug = next(s for s in options if INJECTORS[s].applies(st, p))
                    rows.append((p, inject(st, p, slug, irng, catalog)))
                if p == prompt_p:
                    rows.append((p, inject_prompt(st, p, irng, catalog)))
            rows.sort(key=lambda r: r[0])
            out.manifest.extend(r for _, r in rows)
        out.records.extend(st.records)
    return out


def _context(plan: SplitPlan, master: dict) -> GenContext:
    return GenContext(master=master, prefix=split_prefix(plan.spec.name),
                      n_batches=plan.spec.n_batches, n_records=plan.n_records)


def iter_split_chunks(spec: SplitSpec, master: dict, seed: int, chunk_batches: int = 500,
                      catalog: DeviationCatalog | None = None) -> Iterator[GeneratedSplit]:
    """Yield the split in chunks of `chunk_batches` batches (bounded memory, same records)."""
    if chunk_batches < 1:
        raise ValueError("chunk_batches must be >= 1")
    catalog = catalog or load_catalog()
    plan = plan_split(spec, master, seed, catalog)
    ctx = _context(plan, master)
    for start in range(0, spec.n_batches, chunk_batches):
        stop = min(start + chunk_batches, spec.n_batches)
        yield _generate_batches(plan, ctx, catalog, start, stop)


def generate_split(spec: SplitSpec, master: dict, seed: int,
                   catalog: DeviationCatalog | None = None) -> GeneratedSplit:
    """Generate a whole split: records (what a model sees) and the label manifest."""
    out = GeneratedSplit()
    for chunk in iter_split_chunks(spec, master, seed, chunk_batches=max(1, spec.n_batches),
                                   catalog=catalog):
        out.records.extend(chunk.records)
        out.manifest.extend(chunk.manifest)
    return out
