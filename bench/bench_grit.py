"""Benchmark: GRIT step time against plain AdamW LoRA. Goal: GRIT overhead <= 15%.

A random LlamaForCausalLM (default hidden 256, 4 layers, 4 heads, vocab 2000) with peft LoRA r=16
on q,k,v,o,gate,up,down; batches of 8 x 128 random tokens. Three variants, each its own copy of
the same model: plain AdamW LoRA, GRIT with seed 003's preset (factors every 20 steps) and GRIT
with the default preset (factors every step). Steps are interleaved (one step of each variant in
turn) so that load from other processes falls on all of them alike; medians are reported.
40 timed steps after 5 warm-up steps include one reprojection (every 40 steps) in each GRIT run.

    python bench/bench_grit.py [--steps 40] [--warmup 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from training.grit import GritConfig, GritController, grit_optimizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        vocab_size=args.vocab,
        max_position_embeddings=args.seq,
    )
    lora = LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, target_modules=TARGETS
    )
    return get_peft_model(LlamaForCausalLM(config), lora).to(args.device)


def make_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: str
) -> Callable[[torch.Tensor], float]:
    def step(ids: torch.Tensor) -> float:
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=704)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    variants: dict[str, Callable[[torch.Tensor], float]] = {}
    controllers: dict[str, GritController] = {}
    model = build_model(args)
    params = [p for p in model.parameters() if p.requires_grad]
    variants["lora_adamw"] = make_step(model, torch.optim.AdamW(params, lr=2e-4), args.device)
    for name, config in (("grit_periodic", GritConfig.periodic()), ("grit_default", GritConfig())):
        model = build_model(args)
        optimizer, controllers[name] = grit_optimizer(model, lr=2e-4, config=config)
        variants[name] = make_step(model, optimizer, args.device)

    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(args.device)
        for name, step in variants.items():
            elapsed = step(ids)
            if i >= args.warmup:
                times[name].append(elapsed)

    tokens = args.batch * args.seq
    base = statistics.median(times["lora_adamw"])
    print(
        f"device={args.device} threads={torch.get_num_threads()} hidden={args.hidden} "
        f"layers={args.layers} r={args.rank} batch={args.batch}x{args.seq} "
        f"steps={args.steps} (+{args.warmup} warm-up), interleaved"
    )
    print(f"{'variant':<14}{'median s/step':>14}{'mean s/step':>13}{'tokens/s':>10}{'ratio':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<14}{median:>14.4f}{statistics.fmean(values):>13.4f}"
            f"{tokens / median:>10.0f}{median / base:>8.3f}"
        )
    for name, controller in controllers.items():
        m = controller.metrics()
        print(
            f"{name}: layers={m['n_layers']} mean_effective_rank={m['mean_effective_rank']:.2f} "
            f"effective/lora params={m['effective_param_ratio']:.3f} "
            f"preconditioned_steps={m['preconditioned_steps']} reprojections={m['reprojections']}"
        )
    print("goal: GRIT / LoRA step time <= 1.15")


if __name__ == "__main__":
    main()
