"""Export a served model (fine-tuned weights, adapter merged) to a GGUF file that llama.cpp runs.

llama.cpp decodes SmolLM2-sized models several times faster than transformers on a CPU, and the same file
opens in Ollama or LM Studio. The bundled GGUF is the template: its tokenizer and chat template are
copied, the hyperparameters come from the model's own config, and the tensors are the model's weights
under llama.cpp's names. Two details make or break the file:

- llama.cpp's rotary embedding pairs neighbouring dimensions, transformers pairs the two halves of each
  head, so the Q and K projections are permuted (per head: halves interleaved), as llama.cpp's own
  converter does;
- the vocabulary must be the template's (same tokens in the same order), or text would be encoded
  differently; a model with another tokenizer is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .model import Progress, bundled_gguf, load_causal_lm

# Types a served model can be exported in: name -> (GGML tensor type, llama.cpp file type), by gguf's names.
EXPORT_TYPES = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
                "q4_1": ("Q4_1", "MOSTLY_Q4_1"), "q4_0": ("Q4_0", "MOSTLY_Q4_0")}

# transformers parameter suffix -> llama.cpp tensor name (per layer: "blk.N." prefix).
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
# Template keys rewritten from the model's config (or by the writer itself).
_OWN_KEYS = ("GGUF.", "general.architecture", "general.name", "general.file_type", "llama.")


class ExportError(ValueError):
    """The model cannot be written as a llama.cpp GGUF (architecture, vocabulary or shape)."""


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a Q or K projection reordered from transformers' rotate-half layout to llama.cpp's
    interleaved one (per head: [x0..x(d/2-1), y0..] -> [x0, y0, x1, y1, ...])."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensor_name(name: str) -> str:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    parts = name.split(".")
    if parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES['.'.join(parts[3:])]}"
    raise ExportError(f"parameter {name!r} has no llama.cpp counterpart (only Llama-architecture models export)")


def llama_tensors(model) -> list[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every weight, Q and K permuted; a tied output head is left to
    llama.cpp, which reuses the token embedding as the template does."""
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    tensors = []
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        array = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            array = rope_permute(array, heads)
        elif name.endswith("k_proj.weight"):
            array = rope_permute(array, kv_heads)
        tensors.append((gguf_tensor_name(name), array))
    return tensors


def check_vocabulary(tokenizer, template_tokens: list[str]) -> None:
    vocab = tokenizer.get_vocab()
    mismatched = [t for i, t in enumerate(template_tokens) if vocab.get(t) != i]
    if len(vocab) != len(template_tokens) or mismatched:
        raise ExportError(f"the model's tokenizer ({len(vocab)} tokens) is not the bundled model's "
                          f"({len(template_tokens)} tokens): GGUF export needs the SmolLM2 vocabulary")


def encode(array: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """The array stored as `qtype`; vectors (norms) and shapes the block size does not divide stay float32."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    block = GGML_QUANT_SIZES[qtype][0]
    if array.ndim < 2 or qtype == GGMLQuantizationType.F32 or array.shape[-1] % block:
        return array.astype(np.float32), GGMLQuantizationType.F32
    if qtype == GGMLQuantizationType.F16:
        return array.astype(np.float16), qtype
    return quants.quantize(array, qtype), qtype


def export_gguf(model, tokenizer, target: Path, qtype: str = "q8_0", name: str = "", template: Path | None = None) -> Path:
    """Write `model` (a transformers Llama causal LM, adapter already merged) as a GGUF at `target`; the
    file appears whole or not at all."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType

    if qtype not in EXPORT_TYPES:
        raise ExportError(f"GGUF type {qtype!r}: expected one of {', '.join(EXPORT_TYPES)}")
    if model.config.model_type != "llama":
        raise ExportError(f"model type {model.config.model_type!r}: only Llama-architecture models export to GGUF")
    reader = GGUFReader(template or bundled_gguf())
    check_vocabulary(tokenizer, reader.fields["tokenizer.ggml.tokens"].contents())
    kind = GGMLQuantizationType[EXPORT_TYPES[qtype][0]]
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer = GGUFWriter(partial, "llama")
    try:
        write_metadata(writer, reader, model.config, name or target.stem)
        writer.add_file_type(LlamaFileType[EXPORT_TYPES[qtype][1]])
        # The 4-bit types keep the token embedding (tied, so also the output head) at Q8_0, as the bundled file does.
        embed_type = GGMLQuantizationType.Q8_0 if qtype.startswith("q4") else kind
        for tensor_name, array in llama_tensors(model):
            data, stored = encode(array, embed_type if tensor_name == "token_embd.weight" else kind)
            writer.add_tensor(tensor_name, data, raw_dtype=stored)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(partial, target)
    return target


def export_weights(path: Path, adapter: str | Path, target: Path, qtype: str = "q8_0", name: str = "",
                   progress: Progress | None = None) -> Path:
    """A model folder (with an optional LoRA adapter merged in) written as a GGUF at `target`."""
    progress = progress or (lambda *a: None)
    progress("export gguf", 0, 2)
    model, tokenizer = load_causal_lm(path, adapter)
    progress("export gguf", 1, 2)
    export_gguf(model, tokenizer, target, qtype, name)
    progress("export gguf", 2, 2)
    return target


def write_metadata(writer, reader, config, name: str) -> None:
    """The template's tokenizer and chat template, the model's own hyperparameters."""
    writer.add_name(name)
    for key, field in reader.fields.items():
        if key.startswith(_OWN_KEYS):
            continue
        sub_type = field.types[-1] if len(field.types) > 1 else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
