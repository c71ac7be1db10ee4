"""Passage state cache: each passage's key/value state computed once, placed into prompts at its position.

Prefilling a ~600-token prompt takes about 1.5 s on 2 cores, and most of those tokens are the same passages
again and again. Here a passage (the prompt builder's "[n] title\\ntext" block) is computed once after the
system prompt alone (block attention: it attends to the system prompt and itself), stored in memory (LRU,
up to a byte budget) and on disk beside the GGUF export, and later placed at whatever position a prompt
needs it: RoPE keys are rotated by the position shift (`rope_shift`, exact up to f16 rounding), values
do not depend on position. The question and the glue between the blocks are prefilled as usual and attend
to everything. A block's key hashes the model file, the system prompt's tokens and its own tokens, so an
edited passage or a promoted model simply misses; a corrupt file is deleted and computed again.

llama.cpp gives no call that appends stored cells to a sequence, but it serialises a sequence's cells
(`llama_state_seq_get_data`) and replaces a sequence with serialised cells (`llama_state_seq_set_data`):
`SeqState` reads and writes that format (version checked: f16 keys and values, values not transposed, as
with flash attention), so a prompt is the slot's own prefix cells followed by the rotated blocks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

F16 = 1  # ggml_type of half-precision rows, the only key/value type rotated here


class StateFormatError(RuntimeError):
    """llama.cpp serialised a sequence in a form this module does not read (another version or KV type)."""


@dataclass(frozen=True)
class KVLayout:
    """What the keys of one cell look like: enough to rotate them."""

    layers: int
    kv_heads: int
    head_dim: int
    rope_base: float
    neox: bool  # rotate pairs (i, i + d/2) instead of neighbours (2i, 2i + 1)

    @property
    def row(self) -> int:
        return self.kv_heads * self.head_dim


@dataclass
class SeqState:
    """The cells of one sequence: positions, then keys and values as [layer, cell, kv_heads * head_dim]."""

    positions: np.ndarray  # int32
    keys: np.ndarray  # float16
    values: np.ndarray  # float16

    def take(self, mask: np.ndarray) -> SeqState:
        return SeqState(self.positions[mask], self.keys[:, mask], self.values[:, mask])

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    @staticmethod
    def concat(parts: list[SeqState]) -> SeqState:
        return SeqState(np.concatenate([p.positions for p in parts]), np.concatenate([p.keys for p in parts], axis=1),
                        np.concatenate([p.values for p in parts], axis=1))


@dataclass(frozen=True)
class StateHeader:
    """The fields around a sequence's cells: its id and the context's stream count (one per sequence)."""

    magic: int
    seq: int
    streams: int


def parse_state(raw: bytes, layout: KVLayout) -> tuple[StateHeader, SeqState]:
    """Read `llama_state_seq_get_data`: magic, seq id, stream count, then per stream a cell count and, for
    the sequence's own stream, its cells (position, sequence ids), then per layer the key rows, then the
    value rows (each layer: type, row size, rows)."""
    try:
        header = StateHeader(*struct.unpack_from("<III", raw, 0))
        offset, cells = 12, 0
        for _ in range(header.streams):
            (cells,), offset = struct.unpack_from("<I", raw, offset), offset + 4
            if cells:
                break
        positions = np.empty(cells, np.int32)
        for i in range(cells):
            positions[i], n_seq = struct.unpack_from("<iI", raw, offset)
            offset += 8 + 4 * n_seq
        tensors = []
        if cells:
            transposed, layers = struct.unpack_from("<II", raw, offset)
            offset += 8
            if transposed or layers != layout.layers:
                raise StateFormatError(f"values transposed={transposed}, {layers} layers (expected 0, {layout.layers})")
            for _ in range(2):
                rows = []
                for _ in range(layers):
                    kind, size = struct.unpack_from("<iQ", raw, offset)
                    if kind != F16 or size != 2 * layout.row:
                        raise StateFormatError(f"cache rows of type {kind}, {size} bytes (expected f16, {2 * layout.row})")
                    rows.append(np.frombuffer(raw, np.float16, cells * layout.row, offset + 12).reshape(cells, layout.row))
                    offset += 12 + cells * size
                tensors.append(np.stack(rows))
        else:
            tensors = [np.empty((layout.layers, 0, layout.row), np.float16)] * 2
    except struct.error as err:
        raise StateFormatError(f"sequence state ends early: {err}") from err
    if offset > len(raw) or raw[offset:].strip(b"\0"):
        raise StateFormatError(f"sequence state of {len(raw)} bytes, {offset} read")
    return header, SeqState(positions, *tensors)


def serialise_state(header: StateHeader, state: SeqState) -> bytes:
    """The bytes `llama_state_seq_set_data` reads for `header.seq`: its stream holds `state`, others none."""
    cells = len(state.positions)
    meta = np.empty((cells, 3), np.int32)
    meta[:, 0], meta[:, 1], meta[:, 2] = state.positions, 1, header.seq
    parts = [struct.pack("<III", header.magic, header.seq, header.streams)]
    for stream in range(header.streams):
        if stream != header.seq:
            parts.append(struct.pack("<I", 0))
            continue
        parts += [struct.pack("<I", cells), meta.tobytes(), struct.pack("<II", 0, state.keys.shape[0])]
        for tensor in (state.keys, state.values):
            for layer in tensor:
                parts += [struct.pack("<iQ", F16, layer.shape[1] * 2), np.ascontiguousarray(layer).tobytes()]
    return b"".join(parts)


def rope_shift(keys: np.ndarray, delta: int, layout: KVLayout) -> np.ndarray:
    """Keys computed at position p as if computed at p + delta: RoPE turns each pair of dimensions by
    position x frequency, so a shift is one more turn by delta x frequency (what llama.cpp's own K-shift does)."""
    if delta == 0:
        return keys
    d = layout.head_dim
    k = keys.astype(np.float32).reshape(*keys.shape[:-1], layout.kv_heads, d)
    angle = delta * layout.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    half = np.arange(d // 2)
    first, second = (half, half + d // 2) if layout.neox else (2 * half, 2 * half + 1)  # the pairs turned together
    x0, x1 = k[..., first], k[..., second]
    out = np.empty_like(k)
    out[..., first], out[..., second] = x0 * cos - x1 * sin, x0 * sin + x1 * cos
    return out.reshape(keys.shape).astype(np.float16)


def block_key(model: str, system: list[int], block: list[int]) -> str:
    digest = hashlib.sha256(model.encode())
    digest.update(np.asarray(system, np.int32).tobytes())
    digest.update(b"|")
    digest.update(np.asarray(block, np.int32).tobytes())
    return digest.hexdigest()[:32]


def block_ranges(tokenizer, messages: list[dict], ids: list[int], pieces: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """(context, token ranges of the blocks) of a prompt whose token ids are `ids`. `pieces` follow one another
    in the last message; each block runs to the next one's start, the last to its own end. Each is computed
    after the context: the system prompt, then the last message's start up to the first piece (its role
    header and lead-in), as if it were that message's first passage. Nothing where a block does not start
    and end on token boundaries, so that the prompt's tokens stay exactly those of its text. Serving and
    block-attention training both cut prompts here."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    earlier = tokenizer.apply_chat_template(messages[:-1], tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    joined = "".join(pieces)
    at = text.rfind(joined) if joined else -1
    if at < len(earlier) or not text.startswith(earlier) or encoded["input_ids"] != ids[:len(encoded["input_ids"])] \
            or messages[0]["role"] != "system":
        return [], []
    token_at = {start: i for i, (start, _) in enumerate(encoded["offset_mapping"])}
    bounds = [at]
    for piece in pieces:
        bounds.append(bounds[-1] + len(piece))
    tokens = [token_at.get(bound, -1) for bound in bounds]
    system = len(tokenizer.apply_chat_template(messages[:1], tokenize=True, return_dict=True)["input_ids"])
    last = token_at.get(len(earlier), -1)
    if min(tokens) < 0 or not system <= last < tokens[0] or any(b <= a for a, b in zip(tokens, tokens[1:])):
        return [], []
    return ids[:system] + ids[last:tokens[0]], list(zip(tokens, tokens[1:]))


@dataclass
class CacheStats:
    hits: int = 0  # blocks found in memory
    loaded: int = 0  # blocks read from disk
    computed: int = 0  # blocks prefilled (first use, or a corrupt file)
    corrupt: int = 0  # unreadable files deleted


class PassageCache:
    """Blocks' states by key: an LRU in memory up to `budget_bytes`, and one file per block in `folder`
    (None: memory only). Shared by the decoder thread and whoever warms it, so calls take a lock."""

    def __init__(self, folder: Path | None, budget_bytes: int):
        self.folder, self.budget = folder, budget_bytes
        self.memory: OrderedDict[str, SeqState] = OrderedDict()
        self.bytes = 0
        self.stats = CacheStats()
        self.lock = threading.Lock()

    def get(self, key: str) -> SeqState | None:
        with self.lock:
            if key in self.memory:
                self.memory.move_to_end(key)
                self.stats.hits += 1
                return self.memory[key]
        state = self._load(key)
        if state is not None:
            self.stats.loaded += 1
            self._remember(key, state)
        return state

    def put(self, key: str, state: SeqState) -> None:
        self.stats.computed += 1
        self._remember(key, state)
        if self.folder is not None:
            self._save(key, state)

    def _remember(self, key: str, state: SeqState) -> None:
        with self.lock:
            if key in self.memory:
                return
            self.memory[key] = state
            self.bytes += state.nbytes
            while self.bytes > self.budget and len(self.memory) > 1:
                _, dropped = self.memory.popitem(last=False)
                self.bytes -= dropped.nbytes

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def _save(self, key: str, state: SeqState) -> None:
        """Written to a temporary file and renamed: a crash leaves the old file or none, never half of one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, positions=state.positions, keys=state.keys, values=state.values)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, key: str) -> SeqState | None:
        if self.folder is None or not self._path(key).exists():
            return None
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as data:  # zip members carry a CRC: corruption is caught here
                state = SeqState(data["positions"], data["keys"], data["values"])
            if state.keys.shape != state.values.shape or state.keys.shape[1] != len(state.positions):
                raise ValueError("keys, values and positions disagree")
            return state
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            log.warning("%s: unreadable passage state (%s); computing it again", path, err)
            self.stats.corrupt += 1
            path.unlink(missing_ok=True)
            return None

