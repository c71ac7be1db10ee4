"""Retrieval settings: plain values with defaults, passed in by the caller (chatbot's config)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RetrievalSettings:
    # Embedder folder (a sentence-transformers model); empty means the bundled all-MiniLM-L6-v2.
    embedder: str = ""
    # "onnx-int8": the embedder runs on ONNX Runtime with int8 weights (exported once into the KB folder;
    # 1.4-1.5x the ingest rate of "onnx", the same retrieval quality, see README);
    # "onnx": ONNX Runtime in float32 (several times faster per query than PyTorch, same vectors);
    # "torch": sentence-transformers on PyTorch. A knowledge base keeps the precision it was built with.
    embedder_runtime: str = "onnx-int8"
    # Passages: token budget per passage, counted with the embedder's tokenizer (MiniLM reads 256).
    passage_tokens: int = 200
    # Embed FAQ answer passages too (documents' passages are always embedded). Off by default: the
    # question variants carry the dense signal and answers still reach the lexical index.
    embed_answers: bool = False
    # Past this many vectors the dense index is approximate (IVF), below it exact (flat).
    approximate_above: int = 50_000
    ivf_nprobe: int = 32  # recall@10 0.994 against exact at 100k vectors, 0.4 ms (bench/retrieval.py)
    # Candidates fetched from each retriever before fusion.
    candidates: int = 50
    # BM25 scores the query's rarest terms up to this many matching units in all (see Store.lexical):
    # bounds lexical latency on a large knowledge base; a small one never reaches it. 0 = every term.
    lexical_budget: int = 4000
    # Fusion: entry score = best cosine + lexical_weight * (BM25 / the query's best BM25). 0.15 sits in
    # a flat optimum (0.1-0.2) on data/eval/retrieval.csv; reciprocal-rank fusion scored lower there.
    lexical_weight: float = 0.15
    # Variant vote: an entry's dense score is a smooth maximum over its matching variants at this temperature
    # rather than only its best one (0 = best only). Chosen on the demo KB's own variants, each asked with
    # itself left out (hybrid top-1: 0 -> 0.452, 0.02 -> 0.454, 0.05 -> 0.431); data/eval/retrieval.csv,
    # not used to choose it: 0.808 -> 0.814.
    variant_vote: float = 0.02
    # Entry prototype: an FAQ entry's dense score moves this share of the way from its best variant's cosine
    # to its prototype's (the normalised mean of its variants, see retrieval.prototypes); 0 = best only.
    # A compromise: in a side experiment (dense top-1, fine-tuned, weights 0 / 0.5 / 1) the demo KB's held-out
    # variants scored 0.59 / 0.62 / 0.64 and Banking77 at 10 per intent 0.84 / 0.86 / 0.84; with all of
    # Banking77's ~130 per intent, 0.5 cost 0.2 points off the shelf (README).
    prototype_weight: float = 0.5
    # ... for an entry of up to this many variants; past it the pull shrinks as 1 / variants (an entry with
    # many variants is mapped well by its nearest one): Banking77 with ~130 per intent, dense top-1 0.911 at a
    # constant 0.5, 0.923 shrinking, 0.917 with none. 0 = the same pull at every size.
    prototype_full_up_to: int = 10
    # Entry classifier (retrieval.entry_classifier): softmax regression over the entries, fitted per index
    # version and kept only where the knowledge base's held-out variants say it helps (entries with 5 or
    # more variants on average). Banking77, dense top-1: 0.923 -> 0.936 with all ~130 per intent, 0.833 ->
    # 0.852 with 10.
    entry_classifier: bool = True
    # Correct a query's misspelt words to the knowledge base's own before searching (retrieval.spelling):
    # top-1 with typed slips 0.738 -> 0.806 on data/eval/retrieval.csv, clean queries unchanged.
    spelling: bool = True
    # Calibrated confidence = sigmoid(w . features + b); features are the entry's best cosine, its
    # margin over the next entry and its lexical agreement. Fitted with `supportbot eval retrieval
    # --calibrate` (see retrieval.calibration).
    calibration: list[float] = field(default_factory=lambda: [9.0, 6.0, 1.0, -5.5])
    # Refuse KB fields longer than this (characters): such a field is almost always a broken file.
    max_field_chars: int = 100_000
