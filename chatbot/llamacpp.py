"""The llama.cpp backend: the served model exported to GGUF, decoded by llama.cpp with continuous batching.

On a CPU llama.cpp decodes a SmolLM2-sized model several times faster than transformers (README,
bench/generation.py). One thread owns a llama.cpp context with a KV-cache slot per concurrent request:
at every step it decodes one token for each running request and the next prompt chunk of a new one in a
single batch, so requests join and leave at step boundaries and eight customers cost little more than
one. A free slot keeps its last prompt, so a new request reuses the longest shared prefix (the system
prompt). Prompts are built by the model's own Hugging Face tokenizer and chat template, so this backend
and the transformers one see the same token ids. `llama-cpp-python` compiles on install: it is the
optional extra `supportbot[llamacpp]`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .backends import BackendError, Generation, Messages
from .gguf_export import export_weights
from .model import Progress
from .passage_cache import (KVLayout, PassageCache, SeqState, StateFormatError, block_key, block_ranges, parse_state, rope_shift,
                            serialise_state)

log = logging.getLogger(__name__)

TOP_K, TOP_P = 50, 0.95  # sampling as transformers' defaults, when temperature > 0
COPY_MIN = 16  # a shorter prefix is prefilled rather than copied from another slot


def gguf_for(models_dir: Path, name: str, path: Path, adapter: str | Path, qtype: str,
             progress: Progress | None = None) -> Path:
    """The served model (`path` with `adapter` merged) as a GGUF under models/gguf/, exported on first use.
    The file name holds the version name, which never changes its weights, so the cache stays valid."""
    target = models_dir / "gguf" / f"{name.replace('/', '_')}.{qtype}.gguf"
    return target if target.exists() else export_weights(path, adapter, target, qtype, name, progress)


def llama_cpp():
    """The bindings, with llama.cpp's load-time chatter (thousands of lines) kept to errors."""
    try:
        import llama_cpp
    except ImportError as err:
        raise BackendError("model.backend 'llama.cpp' needs llama-cpp-python: pip install 'supportbot[llamacpp]'") from err
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # read by the bindings' log callback
    return llama_cpp


@dataclass
class Request:
    ids: list[int]  # the prompt
    max_new_tokens: int
    temperature: float
    repetition_penalty: float
    stop: set[int]
    out: queue.Queue = field(default_factory=queue.Queue)  # token ids, then None (or an exception)
    generated: list[int] = field(default_factory=list)
    slot: int = -1
    fed: int = 0  # prompt tokens already in the slot's cache
    cancelled: bool = False
    draft_len: int = 0  # the most tokens its next draft may have: grows while drafts are taken, shrinks if not
    context: list[int] = field(default_factory=list)  # what every passage block is computed after (`blocks`)
    blocks: list[tuple[int, int]] = field(default_factory=list)  # passage blocks [start, end) not yet placed
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    @property
    def prefilled(self) -> bool:
        return self.fed == len(self.ids)


def sample(logits: np.ndarray, request: Request) -> int:
    """The next token: greedy at temperature 0, else top-k then top-p sampling; the repetition penalty as
    transformers applies it (positive logits divided, negative multiplied)."""
    if request.repetition_penalty != 1.0:
        logits = logits.copy()
        seen = np.unique(np.fromiter(request.ids + request.generated, dtype=np.int64))
        values = logits[seen]
        logits[seen] = np.where(values > 0, values / request.repetition_penalty, values * request.repetition_penalty)
    if request.temperature <= 0:
        return int(np.argmax(logits))
    top = np.argpartition(logits, -TOP_K)[-TOP_K:]
    top = top[np.argsort(logits[top])[::-1]]
    probs = np.exp((logits[top] - logits[top[0]]) / request.temperature)
    probs /= probs.sum()
    keep = int(np.searchsorted(np.cumsum(probs), TOP_P)) + 1
    return int(request.rng.choice(top[:keep], p=probs[:keep] / probs[:keep].sum()))


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BatchDecoder:
    """One llama.cpp context, `slots` sequences of `context` tokens each, driven by one thread."""

    def __init__(self, gguf: Path, slots: int, context: int, threads: int, batch: int = 512, draft_tokens: int = 0,
                 passages: PassageCache | None = None):
        lib = self.lib = llama_cpp()
        lib.llama_backend_init()
        context = -(-context // 256) * 256  # llama.cpp pads each sequence's cache to 256 cells
        model_params = lib.llama_model_default_params()
        self.model = lib.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self.model:
            raise BackendError(f"{gguf}: llama.cpp could not load this GGUF")
        self.layout = None
        if passages is not None:
            try:
                self.layout = kv_layout(lib, self.model)
            except BackendError as err:
                log.warning("%s: no passage cache: %s", gguf, err)
                passages = None
        params = lib.llama_context_default_params()
        streams = slots + (passages is not None)  # one more sequence where passage blocks are computed
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = streams * context, batch, batch, streams
        self.threads = params.n_threads = params.n_threads_batch = threads or os.cpu_count() or 1
        params.kv_unified = False  # each sequence its own cache: faster here (README) and no shared prefixes anyway
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED  # a 600-token prefill about 1.4x faster
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise BackendError(f"{gguf}: llama.cpp could not create a context of {slots} x {context} tokens")
        self.memory = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.batch_size, self.context, self.draft_tokens = batch, context, draft_tokens
        self.batch = lib.llama_batch_init(batch, 0, 1)
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # tokens in each slot's cache
        self.exact = [context] * slots  # cells from here on hold placed passage blocks: no prefix to share
        self.gguf, self.model_id, self.passages = gguf, gguf.name, passages
        self.scratch: list[int] = []  # tokens in the block sequence (number `slots`): the last context
        self.warming: list[tuple[list[int], list[int]]] = []  # (context, block) to compute while idle
        self.running: list[Request] = []
        self.steps = self.drafted = self.taken = 0  # llama_decode calls; draft tokens checked, and taken
        self.copied = 0  # prompt tokens copied from another slot instead of prefilled
        self.waiting: list[Request] = []
        self.closing = False
        self.wake = threading.Condition()
        threading.Thread(target=self._loop, daemon=True, name="llama.cpp decoder").start()

    def close(self) -> None:
        """Free the model once the requests already submitted have finished."""
        with self.wake:
            self.closing = True
            self.wake.notify()

    def submit(self, request: Request) -> None:
        if len(request.ids) + request.max_new_tokens > self.context:
            raise BackendError(f"prompt of {len(request.ids)} tokens + {request.max_new_tokens} new ones exceeds "
                               f"the {self.context}-token context")
        with self.wake:
            self.waiting.append(request)
            self.wake.notify()

    def warm(self, context: list[int], blocks: list[list[int]]) -> None:
        """Compute these blocks' states (unless cached) whenever no request is running."""
        with self.wake:
            self.warming += [(context, block) for block in blocks]
            self.wake.notify()

    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.waiting and not self.running and not self.warming and not self.closing:
                    self.wake.wait()
                if self.closing and not self.waiting and not self.running:
                    break
                self._admit()
                warm = self.warming.pop(0) if self.warming and not self.running else None
            try:
                if warm is None:
                    self._step()
                elif self.passages is not None:
                    self._warm_block(*warm)
            except Exception as err:  # noqa: BLE001 - every reader gets the error; the loop goes on afresh
                for request in self.running:
                    request.out.put(err)
                self.running.clear()
                self.lib.llama_memory_clear(self.memory, True)
                self.cached, self.scratch = [[] for _ in self.cached], []
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)

    def _admit(self) -> None:
        """Waiting requests take free slots, each the one whose cache shares the longest prefix with it. With a
        passage cache, a longer prefix held by any other slot is copied over rather than prefilled again (the
        system prompt, for a slot that has not served yet)."""
        busy = {r.slot for r in self.running}
        while self.waiting and len(busy) < len(self.cached):
            request = self.waiting.pop(0)
            free = [s for s in range(len(self.cached)) if s not in busy]
            slot = max(free, key=lambda s: self._reusable(s, request))
            keep = self._reusable(slot, request)
            self.lib.llama_memory_seq_rm(self.memory, slot, keep, -1)
            self.cached[slot], self.exact[slot] = request.ids[:keep], self.context
            donor = max(range(len(self.cached)), key=lambda s: self._reusable(s, request))
            if self.passages is not None and self._reusable(donor, request) >= keep + COPY_MIN:
                keep = self._copy_prefix(donor, slot, self._reusable(donor, request), keep)
            request.slot, request.fed = slot, keep
            busy.add(slot)
            self.running.append(request)

    def _reusable(self, slot: int, request: Request) -> int:
        """How many of the request's first tokens a slot holds as a whole prompt computes them (not its placed
        blocks), leaving at least one to feed for logits and the request's own blocks to be placed."""
        return min(shared_prefix(self.cached[slot], request.ids), len(request.ids) - 1, self.exact[slot],
                   *(start for start, _ in request.blocks[:1]))

    def _copy_prefix(self, donor: int, slot: int, n: int, keep: int) -> int:
        """Copy the donor slot's first n cells into `slot` (which holds `keep` of them); returns the cells it holds."""
        try:
            header, cells = parse_state(self._read(donor), self.layout)
            prefix = cells.take(cells.positions < n)
            if len(prefix.positions) != n:
                raise StateFormatError(f"slot {donor} holds {len(prefix.positions)} of its first {n} cells")
            self._write(slot, serialise_state(replace(header, seq=slot), prefix))
        except StateFormatError as err:
            return self._turn_off(err, slot, keep)
        self.cached[slot] = self.cached[donor][:n]
        self.copied += n - keep
        return n

    def _step(self) -> None:
        """One llama_decode: a token for each decoding request, then prompt chunks within the batch size."""
        self.running = [r for r in self.running if not r.cancelled]
        for request in self.running:
            if request.blocks and self.passages is None:  # the cache was turned off after it was submitted
                request.blocks = []
            elif request.blocks and request.fed == request.blocks[0][0]:
                self._place(request)
        rows: list[tuple[int, Request, list[int]]] = []  # first batch row with a request's logits, its draft
        n = 0
        drafting = [r for r in self.running if r.prefilled and r.temperature <= 0]
        share = min(self.draft_tokens, self.batch_size - len(self.running)) // max(1, len(drafting))
        for request in sorted(self.running, key=lambda r: not r.prefilled):
            if request.prefilled:
                draft = self._draft(request, share) if request in drafting else []
                rows.append((n, request, draft))
                for token in [request.generated[-1], *draft]:
                    n = self._add(n, token, request, True)
                continue
            end = request.blocks[0][0] if request.blocks else len(request.ids)  # blocks are placed, not prefilled
            chunk = request.ids[request.fed:min(end, request.fed + self.batch_size - n)]
            for i, token in enumerate(chunk):
                n = self._add(n, token, request, request.fed + i == len(request.ids) - 1)
            request.fed += len(chunk)
            if request.prefilled:
                rows.append((n - 1, request, []))
            if n == self.batch_size:
                break
        if not n:
            return
        self.batch.n_tokens = n
        status = self.lib.llama_decode(self.ctx, self.batch)
        self.steps += 1
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status}")
        for row, request, draft in rows:
            self._accept(row, request, draft)

    def _draft(self, request: Request, share: int) -> list[int]:
        """Prompt lookup: the tokens that followed the latest earlier occurrence of the last three (else two)
        tokens with `room` tokens after it (else the one with most), as a guess at what comes next. Replies
        copy their passages, so guesses are often right, and llama.cpp checks a guess of k tokens in one
        decode for far less than k decodes cost (here one token takes 12 ms, six 34 ms), but a wrong guess
        is paid for: a request's drafts grow by two tokens after one was taken whole and shrink by one after
        a miss. Greedy requests decoding in one step share
        `draft_tokens` (none are left at six or more): a step that decodes several has little idle compute."""
        room = min(share, request.draft_len or share, request.max_new_tokens - len(request.generated) - 1,
                   self.context - len(self.cached[request.slot]) - 1)
        if room <= 0:
            return []
        seq = request.ids + request.generated
        for n in (3, 2):
            tail, best = seq[-n:], []
            for start in range(len(seq) - n - 1, -1, -1):
                if seq[start:start + n] == tail:
                    found = seq[start + n:start + n + room]
                    best = found if len(found) > len(best) else best
                    if len(best) == room:
                        break
            if best:
                return best
        return []

    def _accept(self, row: int, request: Request, draft: list[int]) -> None:
        """Pick tokens from consecutive rows while the draft agrees with them: the tokens a draft-free decode
        would pick, up to llama.cpp's small differences between logits computed in a batch and one token at
        a time (README). The cache then drops the draft tokens that were not taken."""
        taken = 0
        for j in range(len(draft) + 1):
            logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, row + j), shape=(self.vocab,))
            token = sample(logits, request)
            self._emit(request, token)
            if request not in self.running or j == len(draft) or token != draft[j]:
                break
            taken += 1
        if draft:
            request.draft_len = len(draft) + 2 if taken == len(draft) else max(1, len(draft) - 1)
        self.drafted, self.taken = self.drafted + len(draft), self.taken + taken
        keep = len(request.ids) + len(request.generated) - 1  # the newest token is fed at the next step
        if len(self.cached[request.slot]) > keep:
            self.lib.llama_memory_seq_rm(self.memory, request.slot, keep, -1)
            del self.cached[request.slot][keep:]

    def _place(self, request: Request) -> None:
        """Put the request's passage blocks after its prefilled prefix: the slot's cells are read, the
        blocks' stored cells (computed now if missing) appended with keys turned to their positions, and the
        slot replaced by the result. If llama.cpp's format is not the one read here, the cache is turned
        off and the blocks are prefilled like any other tokens."""
        slot, start, end = request.slot, request.blocks[0][0], request.blocks[-1][1]
        try:
            states = [self._block(request.context, request.ids[a:b]) for a, b in request.blocks]
            header, own = parse_state(self._read(slot), self.layout)
            prefix = own.take(own.positions < start)
            if len(prefix.positions) != start:
                raise StateFormatError(f"slot {slot} holds {len(prefix.positions)} prefix cells, expected {start}")
            parts = [prefix]
            for (a, _), state in zip(request.blocks, states):
                shift = a - int(state.positions[0])
                parts.append(SeqState(state.positions + shift, rope_shift(state.keys, shift, self.layout), state.values))
            self._write(slot, serialise_state(header, SeqState.concat(parts)))
        except StateFormatError as err:
            request.blocks, request.fed = [], self._turn_off(err, slot, start)
            return
        self.cached[slot], self.exact[slot], request.fed, request.blocks = request.ids[:end], start, end, []

    def _turn_off(self, err: StateFormatError, slot: int | None = None, keep: int = 0) -> int:
        """No passage cache from now on (llama.cpp's sequence format is not the one read here): prompts are
        prefilled. A slot keeps its first `keep` cells, or none if a failed write emptied it; returns how many."""
        log.warning("passage cache turned off, prompts are prefilled: %s", err)
        self.passages = None
        if slot is None:
            return 0
        if self.lib.llama_memory_seq_pos_max(self.memory, slot) != keep - 1:
            self.lib.llama_memory_seq_rm(self.memory, slot, 0, -1)
            keep = 0
        self.cached[slot] = self.cached[slot][:keep]
        return keep

    def _block(self, context: list[int], block: list[int]) -> SeqState:
        """A passage block's cells as computed right after `context`, from the cache or prefilled now in the
        block sequence (which keeps the context for the next one)."""
        key = block_key(self.model_id, context, block)
        state = self.passages.get(key)
        if state is not None:
            return state
        seq = len(self.cached)
        keep = min(shared_prefix(self.scratch, context), len(context))
        self.lib.llama_memory_seq_rm(self.memory, seq, keep, -1)
        tokens = (context + block)[keep:]
        b = self.batch
        for first in range(0, len(tokens), self.batch_size):
            chunk = tokens[first:first + self.batch_size]
            for i, token in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, keep + first + i, 1, False
                b.seq_id[i][0] = seq
            b.n_tokens = len(chunk)
            if (status := self.lib.llama_decode(self.ctx, b)) != 0:
                raise BackendError(f"llama_decode failed with status {status}")
        _, cells = parse_state(self._read(seq), self.layout)
        state = cells.take(cells.positions >= len(context))
        self.lib.llama_memory_seq_rm(self.memory, seq, len(context), -1)
        self.scratch = list(context)
        self.passages.put(key, state)
        return state

    def _warm_block(self, context: list[int], block: list[int]) -> None:
        try:
            self._block(context, block)
        except StateFormatError as err:
            self.warming.clear()
            self._turn_off(err)

    def _read(self, seq: int) -> bytes:
        size = self.lib.llama_state_seq_get_size(self.ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        if self.lib.llama_state_seq_get_data(self.ctx, buffer, size, seq) != size:
            raise StateFormatError(f"llama.cpp wrote fewer than {size} bytes of sequence {seq}")
        return bytes(buffer)

    def _write(self, seq: int, data: bytes) -> None:
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if self.lib.llama_state_seq_set_data(self.ctx, buffer, len(data), seq) != len(data):
            raise StateFormatError(f"llama.cpp did not read the {len(data)} bytes written for sequence {seq}")

    def _add(self, n: int, token: int, request: Request, logits: bool) -> int:
        slot = request.slot
        b = self.batch
        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, len(self.cached[slot]), 1, logits
        b.seq_id[n][0] = slot
        self.cached[slot].append(token)
        return n + 1

    def _emit(self, request: Request, token: int) -> None:
        if token in request.stop:
            self._finish(request)
            return
        request.generated.append(token)
        request.out.put(token)
        if len(request.generated) >= request.max_new_tokens:
            self._finish(request)

    def _finish(self, request: Request) -> None:
        request.out.put(None)
        self.running.remove(request)


def kv_layout(lib, model) -> KVLayout:
    """The model's cache rows and rotary embedding, from the GGUF; a model whose keys cannot be turned
    here (no RoPE, partial or scaled RoPE) gets no passage cache."""
    buffer = ctypes.create_string_buffer(64)

    def meta(key: str, default: str) -> str:
        arch = lib.llama_model_meta_val_str(model, b"general.architecture", buffer, 64) > 0 and buffer.value.decode()
        found = lib.llama_model_meta_val_str(model, f"{arch}.{key}".encode(), buffer, 64) > 0
        return buffer.value.decode() if found else default

    heads, rope = lib.llama_model_n_head(model), lib.llama_model_rope_type(model)
    head_dim = lib.llama_model_n_embd(model) // heads
    layout = KVLayout(lib.llama_model_n_layer(model), lib.llama_model_n_head_kv(model), head_dim,
                      float(meta("rope.freq_base", "10000")), rope == lib.LLAMA_ROPE_TYPE_NEOX)
    dims = int(meta("rope.dimension_count", str(head_dim)))
    if rope not in (lib.LLAMA_ROPE_TYPE_NORM, lib.LLAMA_ROPE_TYPE_NEOX) or dims != head_dim \
            or lib.llama_model_rope_freq_scale_train(model) != 1.0:
        raise BackendError(f"the passage cache needs full, unscaled RoPE (rope type {rope}, {dims} of {head_dim} dims)")
    return layout


class LlamaCppBackend:
    """The Backend interface over a BatchDecoder: up to `max_concurrent` requests decode together."""

    def __init__(self, gguf: Path, tokenizer, name: str, threads: int = 0, context: int = 4096,
                 repetition_penalty: float = 1.0, max_concurrent: int = 8, draft_tokens: int = 0,
                 passages: PassageCache | None = None):
        self.decoder = BatchDecoder(gguf, max(1, max_concurrent), context, threads, draft_tokens=draft_tokens,
                                    passages=passages)
        self.tokenizer = tokenizer
        self.name = name
        self.repetition_penalty = repetition_penalty
        self.stop_tokens = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Messages, reply: bool = True) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=reply, return_dict=True)["input_ids"])

    @property
    def caches_passages(self) -> bool:
        return self.decoder.passages is not None

    def warm(self, messages: Messages, pieces: Sequence[str], bodies: list[str]) -> int:
        """Queue the states of passage bodies (`chatbot.prompt.passage_body`) to be computed while no customer
        waits, in the context of a prompt like `messages` (with its passage `pieces`). Returns how many were
        queued: none without a passage cache."""
        context, _ = block_ranges(self.tokenizer, messages, self.prompt_ids(messages), pieces)
        if self.decoder.passages is None or not context:
            return 0
        self.decoder.warm(context, [self.tokenizer(body, add_special_tokens=False)["input_ids"] for body in bodies])
        return len(bodies)

    def generate(self, messages: Messages, max_new_tokens: int, temperature: float = 0.0,
                 passages: Sequence[str] = ()) -> Generation:
        """`passages`: the prompt's passages in pieces (`chatbot.prompt.passage_pieces`), placed from the passage
        cache (when the backend has one) instead of prefilled."""
        request = Request(self.prompt_ids(messages), max_new_tokens, temperature, self.repetition_penalty, set(self.stop_tokens))
        if self.decoder.passages is not None and passages:
            request.context, request.blocks = block_ranges(self.tokenizer, messages, request.ids, passages)
        self.decoder.submit(request)
        generation = Generation(iter(()), prompt_tokens=len(request.ids))
        generation.pieces = self._pieces(request, generation)
        return generation

    def _pieces(self, request: Request, generation: Generation) -> Iterator[str]:
        """Text as tokens arrive, held back while the last token ends inside a multi-byte character."""
        received: list[int] = []
        sent = ""
        try:
            while (token := request.out.get()) is not None:
                if isinstance(token, Exception):
                    raise BackendError(f"llama.cpp generation failed: {token}") from token
                received.append(token)
                text = self.tokenizer.decode(received, skip_special_tokens=True)
                if not text.endswith("\ufffd") and len(text) > len(sent):
                    yield text[len(sent):]
                    sent = text
        finally:
            request.cancelled = True  # a reader that stops early frees the slot at the next step
            generation.completion_tokens = len(received)

    def close(self) -> None:
        self.decoder.close()
