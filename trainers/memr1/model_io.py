"""Load the policy to train from a model spec, and save a trained checkpoint that `hf:DIR` evaluates.

Specs: `hf:DIR_OR_HUB_ID`, a directory, a hub id, `gguf:smollm2-135m` (the embedded GGUF, converted once by
`harness.llm.gguf_convert`), and the aliases `llamacpp:NAME` / `llamacpp-gguf:NAME` for `gguf:NAME`, so the
model the harness runs on llama.cpp is the one trained. A LoRA adapter directory loads on its base, merged.

A checkpoint is a Hugging Face directory: merged full weights (also after LoRA training, unless
`lora.merge: false` keeps the adapter, whose `adapter_config.json` names the base the `hf` backend loads it on),
the tokenizer with its chat template, and `train_meta.json` (what was trained, on what, how, and the val EM).
torch, transformers and peft are imported only when called.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

from harness.llm.gguf_convert import GGUF_PREFIX, resolve_hf_model
from harness.llm.providers.hf import adapter_base
from harness.model_loading import MODEL_LOAD_LOCK
from harness.provenance import git_sha, package_versions
from trainers.memr1.config import TrainConfig

log = logging.getLogger(__name__)

META_FILE = "train_meta.json"
GGUF_ALIASES = ("llamacpp:", "llamacpp-gguf:")
HF_PREFIX = "hf:"
TRAINING_PACKAGES = ("peft", "accelerate", "datasets", "deepspeed", "gguf")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2's (ChatML) template, used only for a tokenizer that has none."""


def model_location(model_spec: str) -> str:
    """What `from_pretrained` loads for a spec: a directory (converted from a GGUF where the spec names one) or a
    hub id. `hf` alone means the embedded model, as for the `hf` backend."""
    name = model_spec.removeprefix(HF_PREFIX) if model_spec != "hf" else f"{GGUF_PREFIX}smollm2-135m"
    for alias in GGUF_ALIASES:
        if name.startswith(alias):
            name = GGUF_PREFIX + name.removeprefix(alias)
    return resolve_hf_model(name)


def torch_dtype(config: TrainConfig) -> Any:
    import torch

    return torch.bfloat16 if config.resolved_bf16() else torch.float32


def load_tokenizer(location: str) -> Any:
    """The tokenizer with a chat template and a pad token (the converted SmolLM2 carries its template)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    if not tokenizer.chat_template:
        log.warning("%s has no chat template; using ChatML (SmolLM2's)", location)
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(model_spec: str, config: TrainConfig) -> tuple[Any, Any, str]:
    """The model to train (plain transformers: LoRA, when enabled, is applied by the trainer from
    `peft_config(config)`), its tokenizer, and the resolved location it was loaded from."""
    from transformers import AutoModelForCausalLM

    location = model_location(model_spec)
    base = adapter_base(location)
    started = time.perf_counter()
    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(base or location, dtype=torch_dtype(config))
        if base is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, location).merge_and_unload()
    # A model read straight from a GGUF keeps its quantizer although its weights are plain (MACHINE_NOTES).
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
    if config.gradient_checkpointing:
        model.config.use_cache = False
    tokenizer = load_tokenizer(location if base is None or (Path(location) / "tokenizer.json").is_file() else base)
    log.info("loaded %s from %s in %.1fs", model_spec, base or location, time.perf_counter() - started)
    return model, tokenizer, location


def peft_config(config: TrainConfig) -> Any:
    """peft's `LoraConfig` when `config.lora.enabled`, else None (hand it to TRL's `peft_config=`)."""
    if not config.lora.enabled:
        return None
    from peft import LoraConfig

    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_checkpoint(
    model: Any, tokenizer: Any, output_dir: Path, meta: dict[str, Any], *, state_dict: dict[str, Any] | None = None
) -> Path:
    """Write `output_dir` as a Hugging Face directory `hf:output_dir` loads, plus `train_meta.json` (`meta` with
    the git SHA, package versions and time added). A peft model is merged into full weights unless
    `meta["lora_merged"]` is False, which saves the adapter alone (its config names the base). `state_dict`: the
    weights gathered from a sharded (DeepSpeed ZeRO-3) model; a peft model then saves its adapter, unmerged."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    merged = None
    if is_peft_model(model):
        merged = meta.get("lora_merged", True) is not False and state_dict is None
        if merged:
            model = model.merge_and_unload()
    model.save_pretrained(output_dir, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(output_dir)
    write_meta(output_dir, {**meta, "lora_merged": merged})
    return output_dir


def save_trained(trainer: Any, tokenizer: Any, output_dir: Path, meta: dict[str, Any]) -> Path:
    """`save_checkpoint` of a transformers/TRL trainer's model, on the main process; under DeepSpeed the weights are
    gathered first (every process must call this)."""
    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    state_dict = accelerator.get_state_dict(trainer.model_wrapped) if trainer.is_deepspeed_enabled else None
    if accelerator.is_main_process:
        save_checkpoint(model, tokenizer, output_dir, meta, state_dict=state_dict)
    accelerator.wait_for_everyone()
    return Path(output_dir)


def write_meta(output_dir: Path, meta: dict[str, Any]) -> Path:
    record = {
        **meta,
        "git_sha": git_sha(),
        "versions": {**package_versions(), **package_versions(TRAINING_PACKAGES)},
        "python": platform.python_version(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = Path(output_dir) / META_FILE
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_meta(checkpoint: Path) -> dict[str, Any]:
    return dict(json.loads((Path(checkpoint) / META_FILE).read_text()))
