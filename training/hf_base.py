"""The `hf` profile of the base model: any Hugging Face model id or local path.

Nothing is copied or pretrained: the reference names the id (or folder) every later task loads
with `from_pretrained`, after checking here that its config and tokenizer resolve (hub, cache or
folder) and counting its parameters on the meta device, so a 7B model costs no memory here.
With the hub offline (HF_HUB_OFFLINE=1) a model that is neither a folder nor cached fails at once
with an error that says so and names the embedded profile as the local default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def describe_hf_base_model(model_id: str, output_dir: Path, *,
                           trust_remote_code: bool = False) -> dict[str, Any]:
    """Resolve `model_id`, write `gxplab_model.json` under `output_dir` and return the base model
    reference (profile, model_path, architecture, parameter count, chat template, revision)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from training.embedded_model import raise_if_offline

    if not model_id or not isinstance(model_id, str):
        raise ValueError("profile hf: field 'model_id' (a hub id or a local folder) is required")
    local = Path(model_id).expanduser()
    if model_id.startswith(("/", ".", "~")) and not local.is_dir():
        raise FileNotFoundError(f"base model path {model_id!r} is not a folder")
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise_if_offline(model_id, err)
        raise
    # On the meta device: shapes without memory. (accelerate's init_empty_weights unties tied
    # embeddings under transformers 5 and so over-counts them.)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    template = str(tokenizer.chat_template or "")
    reference: dict[str, Any] = {
        "profile": "hf",
        "model_path": str(local.resolve()) if local.is_dir() else model_id,
        "model_id": model_id,
        "architecture": (config.architectures or [type(skeleton).__name__])[0],
        "parameter_count": sum(p.numel() for p in skeleton.parameters()),
        "hidden_size": getattr(config, "hidden_size", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
        "chat_template": "with generation markers" if "{% generation %}" in template
        else ("present" if template else "none"),
        "revision": getattr(config, "_commit_hash", None),
        "trust_remote_code": trust_remote_code,
    }
    if local.is_dir():
        reference["size_bytes"] = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "gxplab_model.json").write_text(json.dumps(reference, indent=2) + "\n",
                                                  encoding="utf-8")
    return reference
