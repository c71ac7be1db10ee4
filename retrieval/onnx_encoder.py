"""The embedder on ONNX Runtime: the same weights, exported once, several times faster per query on a CPU.

PyTorch spends most of a one-sentence encoding in per-operator overhead; ONNX Runtime runs the whole
graph (transformer, mean pooling, L2 normalisation) with fused kernels. The export is made from the
sentence-transformers model on first use, written atomically under a cache folder named by the weights'
digest, so a changed model is exported again and two processes never read a half-written file.

The int8 variant quantizes that graph's weights once more (dynamic quantization, one scale per output
channel): 1.4-1.5x the texts/s of float32 on 2 AVX2 cores, vectors at mean cosine 0.993 to the float
ones and the same retrieval quality (bench/retrieval.py). One scale per tensor, tried first, lost retrieval
quality (cosine 0.966). Activations are quantized with one scale per batch, so a
text's int8 vector varies slightly (cosine above 0.99) with the batch it is encoded in.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def exportable(path: Path) -> bool:
    """Only Transformer -> mean Pooling (-> Normalize) pipelines, the shape of MiniLM and most embedders."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, IndexError):
        return False
    # sentence-transformers 6 writes "pooling_mode": "mean"; older folders one boolean per mode.
    modes = [pooling["pooling_mode"]] if "pooling_mode" in pooling else [
        k.removeprefix("pooling_mode_").removesuffix("_tokens") for k, on in pooling.items() if k.startswith("pooling_mode") and on]
    return kinds[:2] == ["Transformer", "Pooling"] and set(kinds[2:]) <= {"Normalize"} and modes == ["mean"]


class OnnxEncoder:
    def __init__(self, path: Path, tokenizer: PreTrainedTokenizerFast, file: Path, threads: int, quantized_from: Path | None = None):
        """`file` is the graph to run, exported first if missing: from the model folder, or as the int8
        copy of the float graph `quantized_from`."""
        self.path, self.file = path, file
        if not file.exists() and quantized_from:
            export_int8(path, file, quantized_from)
        elif not file.exists():
            export(path, file)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer
        self.max_length = int(self.session.get_modelmeta().custom_metadata_map["max_seq_length"])
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str]) -> np.ndarray:
        features = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np",
                                  return_token_type_ids="token_type_ids" in self.inputs)
        feed = {name: features[name].astype(np.int64) for name in self.inputs}
        return np.ascontiguousarray(self.session.run(None, feed)[0], dtype=np.float32)


def export_int8(path: Path, file: Path, float_file: Path) -> None:
    """The float32 export (made first if missing) with int8 weights, written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not float_file.exists():
        export(path, float_file)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer advises "pre-processing" on the root logger every time
        try:
            quantize_dynamic(str(float_file), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def export(path: Path, file: Path) -> None:
    """sentence-transformers folder -> one ONNX graph from token ids to normalised vectors."""
    import onnx
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    transformer = model[0].auto_model.eval()
    features = model.tokenizer(["a short example sentence"], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs):
            kwargs = dict(zip(names, inputs))
            hidden = self.transformer(**kwargs).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pooled().eval(), tuple(features[n] for n in names), str(tmp), input_names=names,
                              output_names=["vectors"], dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names},
                              opset_version=17, dynamo=False)
        graph = onnx.load(str(tmp))  # the truncation length travels with the graph: texts are cut as before
        graph.metadata_props.add(key="max_seq_length", value=str(model.max_seq_length))
        onnx.save(graph, str(tmp))
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)

