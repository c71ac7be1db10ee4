"""Knowledge base and hybrid retrieval: a library that knows nothing of LMs or apps."""

from .embedder import Embedder, bundled_embedder_path, fast_tokenizer
from .evaluate import EvalFileError, RetrievalReport, evaluate_perturbed, evaluate_retrieval, load_queries, read_eval_csv
from .perturb import perturb
from .kb import IngestReport, KnowledgeBase, Progress
from .records import Entry, IngestError, Passage, SearchHit
from .scope import ScopeModel, fit_scope
from .settings import RetrievalSettings

__all__ = [
    "Embedder", "bundled_embedder_path", "fast_tokenizer", "EvalFileError", "RetrievalReport", "evaluate_perturbed", "evaluate_retrieval", "perturb", "load_queries",
    "read_eval_csv", "IngestReport", "KnowledgeBase", "Progress", "Entry", "IngestError", "Passage", "SearchHit",
    "RetrievalSettings", "ScopeModel", "fit_scope",
]
