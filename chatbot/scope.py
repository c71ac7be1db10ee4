"""The out-of-scope guard: a message that is none of the knowledge base's business is handed off, however
confident retrieval is (`retrieval.scope` says how the classifier decides and where its threshold comes from).

The classifier is fitted at start-up (`supportbot serve`) or on first use, and again after every change to
the knowledge base (each write gives the index a new token): about a second on the demo data, paid by the
first reply after the change."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from retrieval import Embedder, KnowledgeBase, ScopeModel, fit_scope
from retrieval.scope import min_inside

from .config import AnswerSettings, ConfigError

# Company-agnostic messages no support knowledge base answers (chit-chat, outside advice, jobs, press, other
# shops...): the guard's outside examples, and the training seed's out-of-scope questions.
OUT_OF_SCOPE = Path(__file__).with_name("out_of_scope.txt")
MAX_INSIDE = 2000  # variants the classifier is fitted on (a random sample of a larger knowledge base)
# A message this close (cosine) to one of the knowledge base's own texts is in scope whatever the classifier
# says: an entry the company wrote (say, about its favourite colour) outranks the generic examples. Set for
# MiniLM: the out-of-scope questions of data/eval/answers.csv that the guard catches are at most 0.67 from
# any text.
SURE_MATCH = 0.85


def read_questions(path: Path) -> list[str]:
    """One question per line (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read questions ({err.__class__.__name__})") from None
    return [line.strip() for line in lines if line.strip()]


class ScopeGuard:
    """One per bot: the outside examples, and the classifier fitted for the knowledge base as it was last seen."""

    def __init__(self, settings: AnswerSettings):
        if not 0 <= settings.scope_false_alarms < 1:
            raise ConfigError(f"answer.scope_false_alarms {settings.scope_false_alarms!r}: expected a share from 0 (no guard) to below 1")
        self.false_alarms = settings.scope_false_alarms
        try:
            self.examples = read_questions(Path(settings.out_of_scope_file).expanduser() if settings.out_of_scope_file else OUT_OF_SCOPE)
        except ValueError as err:
            raise ConfigError(f"answer.out_of_scope_file: {err}") from None
        self._fitted: tuple[str, ScopeModel | None, Embedder | None] = ("", None, None)  # index token, classifier, its embedder
        self._outside_vectors: dict[str, np.ndarray] = {}  # embedder model id -> the examples' vectors
        self._lock = threading.Lock()

    def outside(self, kb: KnowledgeBase, texts: list[str], best_match: float) -> bool:
        """Whether every one of `texts` (the message, and the message read as a follow-up) is outside;
        `best_match` is the best cosine of the hits the turn goes on with. The turn's searches have already
        embedded these texts: `query_vector` hands their vectors back."""
        if not self.false_alarms or not texts or best_match >= SURE_MATCH:
            return False
        model, embedder = self.model(kb)
        return model is not None and bool(model.outside(np.stack([kb.query_vector(t, embedder) for t in texts])).all())

    def model(self, kb: KnowledgeBase) -> tuple[ScopeModel | None, Embedder | None]:
        """The classifier for the knowledge base as it is now and the embedder it reads; no classifier when
        the knowledge base has too few question variants (see `retrieval.fit_scope`)."""
        with self._lock:
            if self._fitted[0] != kb.store.index_token():
                token, embedder, inside = kb.question_vectors(MAX_INSIDE)
                model = None
                if len(inside) >= min_inside(self.false_alarms):  # else no need to embed the examples
                    if embedder.model_id not in self._outside_vectors:
                        self._outside_vectors[embedder.model_id] = embedder.encode(self.examples)
                    model = fit_scope(inside, self._outside_vectors[embedder.model_id], self.false_alarms)
                self._fitted = (token, model, embedder)
            return self._fitted[1], self._fitted[2]
