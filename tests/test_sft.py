"""SFT/QLoRA adapter task (training/sft.py) on a tiny embedded base model, on the CPU."""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_embedded_model import TINY

from training.embedded_model import build_embedded_base_model
from training.sft import (
    NO_CUDA,
    SftSettings,
    load_adapter,
    read_sft_rows,
    resolve_quantization,
    sft_task,
)
from training.tasks import TASKS

# Eight short audit Q/A chats; the assistant reply is all the loss sees (assistant_only_loss).
CHATS = [
    {"messages": [{"role": "system", "content": "You are a GxP auditor."},
                  {"role": "user", "content": f"Step {i}: is the signature present?"},
                  {"role": "assistant", "content": f"Deviation {i}: missing signature"}]}
    for i in range(8)
]
FAST = {"torch_threads": 1, "learning_rate": 1e-2}  # tiny model: a high LoRA lr learns in 40 steps


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("sft")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(root / "base", TINY)
    yield SimpleNamespace(root=root, model=str(root / "base"),
                          train_file=_write_jsonl(root / "chats.jsonl", CHATS * 2))
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def trained(base) -> SimpleNamespace:
    reports: list[dict] = []
    config = {"base_model_path": base.model, "train_file": str(base.train_file),
              "max_steps": 40, "save_steps": 100, **FAST}
    metadata = sft_task(config, base.root / "run", lambda **m: reports.append(m))
    return SimpleNamespace(metadata=metadata, reports=reports, out=base.root / "run")


def test_settings_defaults_follow_the_issue():
    s = SftSettings()
    assert (s.lora_r, s.lora_alpha, s.lora_dropout) == (16, 32, 0.05)
    assert s.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                "down_proj")
    assert (s.learning_rate, s.lr_scheduler_type, s.warmup_ratio) == (2e-4, "cosine", 0.03)
    assert (s.per_device_train_batch_size, s.gradient_accumulation_steps, s.max_length) \
        == (4, 1, 512)
    assert (s.eval_fraction, s.seed, s.logging_steps, s.save_total_limit) == (0.1, 42, 1, 2)
    assert s.gradient_checkpointing and s.quantization == "auto" and s.max_steps is None
    overridden = SftSettings.from_mapping({"target_modules": "q_proj,v_proj", "max_steps": "8"})
    assert overridden.target_modules == ("q_proj", "v_proj") and overridden.max_steps == 8


def test_settings_errors_name_the_field():
    with pytest.raises(ValueError, match="task config: field 'lora_rank' is unknown"):
        SftSettings.from_mapping({"lora_rank": 8})
    with pytest.raises(ValueError, match="field 'per_device_train_batch_size': cannot use 'x'"):
        SftSettings.from_mapping({"per_device_train_batch_size": "x"})
    with pytest.raises(ValueError, match="quantization must be one of auto, nf4, none"):
        SftSettings.from_mapping({"quantization": "int8"})
    with pytest.raises(ValueError, match="field 'gradient_checkpointing'"):
        SftSettings.from_mapping({"gradient_checkpointing": "yes"})


def test_quantization_falls_back_without_cuda():
    assert resolve_quantization("auto", cuda=True) == "nf4"
    assert resolve_quantization("nf4", cuda=True) == "nf4"
    assert resolve_quantization("auto", cuda=False) == NO_CUDA == "none (no CUDA)"
    assert resolve_quantization("nf4", cuda=False) == NO_CUDA
    assert resolve_quantization("none", cuda=True) == "none"


def test_nf4_loads_the_base_4bit_and_prepares_it_for_kbit_training(monkeypatch):
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training import sft

    calls: dict[str, dict] = {}
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda path, **kw: "tokenizer")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: calls.setdefault("load", kw) and "model")
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training",
                        lambda model, **kw: calls.setdefault("prepare", kw) and "prepared")
    assert sft._load_model("some/base", "nf4") == ("prepared", "tokenizer")
    bnb = calls["load"]["quantization_config"]
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_use_double_quant and bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert calls["load"]["device_map"] == {"": 0}
    assert calls["prepare"]["use_gradient_checkpointing"] is True


def test_bad_rows_name_file_line_and_field(tmp_path):
    cases = [
        ("{not json", "line 2: not valid JSON"),
        (json.dumps({"messages": [{"role": "tool", "content": "x"}]}),
         r"line 2: field 'messages\[0\].role' must be one of assistant, system, user"),
        (json.dumps({"record_id": "R-7", "messages": [{"role": "user", "content": "x"}]}),
         r"line 2 \(record_id R-7\): field 'messages' has no assistant message"),
        (json.dumps({"prompt": "a", "completion": "b"}), "line 2: mixes prompt_completion"),
    ]
    for bad_line, message in cases:
        path = tmp_path / "train.jsonl"
        path.write_text(json.dumps(CHATS[0]) + "\n" + bad_line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message) as info:
            read_sft_rows(path)
        assert str(path) in str(info.value)
    path.write_text(json.dumps({"prompt": "a", "completion": 3}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: field 'completion' must be a string"):
        read_sft_rows(path)
    with pytest.raises(ValueError, match="field 'train_file' is required"):
        sft_task({"base_model_path": "x"}, tmp_path, lambda **m: None)


def test_task_is_registered():
    assert TASKS["qlora_adapter"] is sft_task


def test_memorisable_chats_lower_the_loss(trained):
    losses = trained.metadata["losses"]
    assert len(losses) == 40 and trained.metadata["steps"] == 40
    # step 1 sees the base model (LoRA B starts at zero); measured ~6.1 -> ~5.0 over 40 steps
    assert sum(losses[-5:]) / 5 < losses[0] - 0.7
    assert trained.metadata["eval_loss"] < losses[0] - 0.5
    assert 0 < trained.metadata["train_loss"] < losses[0]
    # the base model's loss on the same 2 held-out rows, measured before the first step
    assert trained.metadata["eval_rows"] == 2
    assert trained.metadata["base_eval_loss"] > trained.metadata["eval_loss"] + 0.5
    first_eval = next(r for r in trained.reports if "eval_loss" in r)
    assert first_eval["step"] == 0
    assert first_eval["eval_loss"] == trained.metadata["base_eval_loss"]


def test_metadata_describes_the_run(trained, base):
    md = trained.metadata
    assert md["quantization"] == ("nf4" if torch.cuda.is_available() else "none (no CUDA)")
    assert md["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert md["resumed_from"] is None
    # r=16 LoRA on 7 projections x 2 layers: r * (d_in + d_out) each; hidden 32, intermediate 64
    per_layer = 16 * (4 * (32 + 32) - 2 * 16 + 3 * (32 + 64))  # k/v project to 2 kv heads x 8 = 16
    assert md["trainable_params"] == 2 * per_layer
    assert md["trainable_params"] < md["total_params"]
    # 16 rows, 10% held out (ceil -> 2), the rest train
    assert md["train_rows"] == 14
    assert md["tokens_seen"] > 0 and md["tokens_per_s"] > 0 and md["peak_memory_mb"] > 0
    assert md["dataset_sha256"] == hashlib.sha256(base.train_file.read_bytes()).hexdigest()


def test_adapter_and_archive_are_saved(trained, base):
    md = trained.metadata
    adapter = Path(md["adapter_path"])
    assert adapter == trained.out / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in
                                                                    adapter.iterdir()}
    assert md["adapter_size_bytes"] == sum(p.stat().st_size for p in adapter.iterdir())
    archive = Path(md["archive_path"])
    assert archive.parent == trained.out and archive.name.endswith(".tar.gz")
    assert md["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive) as tar:
        assert "adapter/adapter_model.safetensors" in tar.getnames()
    card = (trained.out / "model_card.md").read_text()
    assert md["dataset_sha256"] in card and "| lora_r | 16 |" in card
    assert f"base model: `{base.model}`" in card


def test_loaded_adapter_fits_the_chats_and_generates(trained, base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = load_adapter(base.model, trained.metadata["adapter_path"])
    plain = AutoModelForCausalLM.from_pretrained(base.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained.metadata["adapter_path"])
    chat = tokenizer.apply_chat_template(CHATS[3]["messages"], return_dict=True,
                                         return_assistant_tokens_mask=True, return_tensors="pt")
    labels = chat["input_ids"].masked_fill(chat["assistant_masks"] == 0, -100)
    with torch.no_grad():
        tuned = model(input_ids=chat["input_ids"], labels=labels).loss.item()
        untuned = plain(input_ids=chat["input_ids"], labels=labels).loss.item()
    assert tuned < untuned - 0.5
    prompt = tokenizer.apply_chat_template(CHATS[3]["messages"][:2], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert new.numel() == 5 and int(new.max()) < len(tokenizer)


def test_report_streams_every_logging_step(trained):
    steps = [r for r in trained.reports if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert {r["total"] for r in steps} == {40}
    assert [r["loss"] for r in steps] == trained.metadata["losses"]
    # warmup ceil(3% of 40) = 2 steps (lr used by each step is logged), then cosine to 0
    assert [r["learning_rate"] for r in steps[:3]] == pytest.approx([0.0, 5e-3, 1e-2])
    last_lr = 1e-2 * 0.5 * (1 + math.cos(math.pi * 37 / 38))  # step 40: 37 of 38 cosine steps
    assert steps[-1]["learning_rate"] == pytest.approx(last_lr)
    evals = [r for r in trained.reports if "eval_loss" in r]
    assert evals and evals[-1]["eval_loss"] == trained.metadata["eval_loss"]
    assert any(r.get("note", "").startswith("quantization") for r in trained.reports) \
        or torch.cuda.is_available()


def test_rerun_resumes_from_the_last_checkpoint(base):
    out = base.root / "resumable"
    config = {"base_model_path": base.model, "train_file": str(base.train_file),
              "save_steps": 2, **FAST}
    first_reports: list[dict] = []
    first = sft_task({**config, "max_steps": 4}, out, lambda **m: first_reports.append(m))
    assert first["resumed_from"] is None and first["steps"] == 4
    reports: list[dict] = []
    second = sft_task({**config, "max_steps": 8}, out, lambda **m: reports.append(m))
    assert second["resumed_from"] == str(out / "checkpoints" / "checkpoint-4")
    steps = [r["step"] for r in reports if "loss" in r]
    assert steps == [5, 6, 7, 8]
    assert second["steps"] == 8 and len(second["losses"]) == 8
    assert second["losses"][:4] == first["losses"]  # the restored history, then the new steps
    assert second["tokens_seen"] > first["tokens_seen"]
    kept = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-6", "checkpoint-8"]  # save_total_limit 2


def test_prompt_completion_rows_train(base, tmp_path):
    rows = [{"prompt": f"Deviation {i} principle:", "completion": " Attributable"}
            for i in range(6)]
    train_file = _write_jsonl(tmp_path / "pc.jsonl", rows)
    md = sft_task({"base_model_path": base.model, "train_file": str(train_file), "max_steps": 2,
                   "eval_fraction": 0, **FAST}, tmp_path / "out", lambda **m: None)
    assert md["steps"] == 2 and md["eval_loss"] is None and md["train_rows"] == 6
    assert Path(md["adapter_path"], "adapter_model.safetensors").is_file()


def test_a_chat_template_without_generation_markers_trains_the_reply_as_a_completion(base,
                                                                                   trained):
    """Hub chat templates rarely mark replies with {% generation %}: the reply is then trained
    as a conversational completion (loss on it alone), and the run says so."""
    import shutil

    from transformers import AutoTokenizer

    plain = base.root / "plain_template"
    shutil.copytree(base.model, plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", "")
    tokenizer.save_pretrained(plain)
    reports: list[dict] = []
    config = {"base_model_path": str(plain), "train_file": str(base.train_file),
              "max_steps": 40, "save_steps": 100, **FAST}
    metadata = sft_task(config, base.root / "plain_run", lambda **m: reports.append(m))
    assert any("completion-only loss" in str(r.get("note", "")) for r in reports)
    losses = metadata["losses"]
    # step 1 sees the base model: about the same loss as with the markers (measured 6.30 / 6.36),
    # so the loss falls on the same reply tokens
    assert abs(losses[0] - trained.metadata["losses"][0]) < 0.2
    assert sum(losses[-5:]) / 5 < losses[0] - 0.7  # the replies are learned


def test_trainable_embeddings_prompt_loss_and_grit_reprojection(base, tmp_path):
    """modules_to_save trains the (tied) embeddings beside LoRA and saves them with the adapter;
    prompt_loss puts the prompt's tokens in the loss; grit_reproject_every overrides the GRIT
    preset's interval, so a short run reprojects."""
    from training.inference import LocalGenerator

    config = {"base_model_path": base.model, "train_file": str(base.train_file),
              "max_steps": 4, "save_steps": 100, "modules_to_save": "embed_tokens",
              "prompt_loss": True, "grit_reproject_every": 2, **FAST}
    md = TASKS["grit_adapter"](config, tmp_path / "grit", lambda **m: None)
    assert md["grit_reprojections"] == 2 and md["grit_step"] == 4
    assert 4 <= md["grit_mean_effective_rank"] <= 16
    # LoRA (as in test_metadata_describes_the_run) plus the vocab x 32 embedding matrix (the
    # tokenizer's 512 plus the record audit's single-token answer pieces, slugs and keys)
    per_layer = 16 * (4 * (32 + 32) - 2 * 16 + 3 * (32 + 64))
    vocab = json.loads((Path(base.model) / "config.json").read_text())["vocab_size"]
    assert vocab > 512
    assert md["trainable_params"] == 2 * per_layer + vocab * 32
    # prompt loss: every token of a row is labelled, not only the reply
    from training.sft import _build_trainer

    labelled = {}
    for prompt_loss in (True, False):
        settings = SftSettings.from_mapping({"prompt_loss": prompt_loss, **FAST})
        trainer, _ = _build_trainer(base.model, read_sft_rows(base.train_file), settings,
                                    "none (no CUDA)", tmp_path / f"ck{prompt_loss}",
                                    lambda **m: None)
        batch = next(iter(trainer.get_train_dataloader()))
        labelled[prompt_loss] = (int((batch["labels"] != -100).sum()),
                                 int(batch["attention_mask"].sum()))
    assert labelled[True][0] == labelled[True][1]
    assert labelled[False][0] < labelled[False][1] / 2
    # the merged generator (adapter + trained embeddings) scores like the peft model
    generator = LocalGenerator(base.model, md["adapter_path"], torch_threads=1)
    peft_model = load_adapter(base.model, md["adapter_path"])
    ids = torch.tensor([[1, 5, 9, 30, 77]])
    with torch.no_grad():
        merged, unmerged = generator.model(ids).logits, peft_model(ids).logits
    assert torch.allclose(merged, unmerged, atol=1e-4)
    embeddings = generator.model.get_input_embeddings().weight
    assert torch.equal(embeddings, generator.model.get_output_embeddings().weight)


def test_new_settings_are_checked():
    assert SftSettings.from_mapping({"modules_to_save": "embed_tokens,norm"}).modules_to_save \
        == ("embed_tokens", "norm")
    with pytest.raises(ValueError, match="grit_reproject_every must be >= 1"):
        SftSettings.from_mapping({"grit_reproject_every": 0})
    assert SftSettings.from_mapping({"grit_reproject_every": None}).grit_reproject_every is None
