"""Which folders a local model loads from: a base model plus a LoRA adapter, or a whole model.

An adapter task writes `adapter/`: a PEFT adapter (adapter_config.json) for LoRA, or a whole
fine-tuned model (config.json, no adapter_config.json) for full fine-tuning (the
gxp_audit_adapter task's `method: full`, training/audit_sft.py). LocalGenerator passes its (base,
adapter) pair through `generator_paths`, so every caller (the generate task, the server) loads
either. Plain Python: no torch, no Dagster.
"""

from __future__ import annotations

from pathlib import Path


def is_full_model(folder: str | Path | None) -> bool:
    """Whether `folder` holds a whole model (config.json) rather than a PEFT adapter."""
    if not folder:
        return False
    path = Path(folder)
    return (path / "config.json").is_file() and not (path / "adapter_config.json").is_file()


def generator_paths(base_model_path: str | Path, adapter_path: str | Path | None
                    ) -> tuple[str, str | None]:
    """(model folder, adapter folder or None) to load: a fully fine-tuned `adapter_path` replaces
    the base model (it was trained from it and saved whole)."""
    if is_full_model(adapter_path):
        return str(adapter_path), None
    return str(base_model_path), str(adapter_path) if adapter_path else None
