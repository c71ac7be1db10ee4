"""The FAISS index of unit vectors, keyed by the store's unit ids so upserts need no full rebuild.

Small knowledge bases get an exact inner-product index; past `approximate_above` vectors an IVF index
(which, unlike HNSW, supports removal by id). Vectors are normalised, so inner product is cosine.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np


class DenseIndex:
    def __init__(self, index: faiss.Index, nprobe: int = 16):
        self.index = index
        self.set_nprobe(nprobe)

    @classmethod
    def build(cls, uids: np.ndarray, vectors: np.ndarray, dim: int, approximate_above: int, nprobe: int) -> DenseIndex:
        """The right kind of index for this many vectors, filled with them."""
        n = len(uids)
        if n > approximate_above:
            nlist = ivf_lists(n)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
        else:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(vectors, uids)
        return cls(index, nprobe)

    @property
    def kind(self) -> str:
        """What is recorded with the index: "flat" or "ivf<lists>"."""
        return f"ivf{self.index.nlist}" if isinstance(self.index, faiss.IndexIVF) else "flat"

    @property
    def size(self) -> int:
        return self.index.ntotal

    def set_nprobe(self, nprobe: int) -> None:
        if isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = nprobe

    def suits(self, approximate_above: int) -> bool:
        """False when the count has moved far enough that another kind (or a retrained IVF) is due."""
        n = self.size
        if isinstance(self.index, faiss.IndexIVF):
            return approximate_above / 2 < n <= 4 * approximate_above and ivf_lists(n) <= 2 * self.index.nlist
        return n <= approximate_above

    def add(self, uids: np.ndarray, vectors: np.ndarray) -> None:
        if len(uids):
            self.index.add_with_ids(vectors, uids)

    def remove(self, uids: list[int]) -> None:
        if uids:
            self.index.remove_ids(np.asarray(uids, dtype=np.int64))

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(uid, cosine) best first."""
        if self.size == 0:
            return []
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), min(k, self.size))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, nprobe: int) -> DenseIndex:
        return cls(faiss.read_index(str(path)), nprobe)


def ivf_lists(n: int) -> int:
    return int(min(4096, max(16, 4 * math.sqrt(n))))
