"""Generation benchmark: the product's serving path against llama.cpp on the bundled GGUF, side by side.

Five paths, in one process, on the same prompt token ids, with the same thread count:

- product: `chatbot.engine.make_backend(config)` with the serving defaults, on a home whose serving version
  is the committed demo adapter (`data/models/tidewell-sft`, fine-tuned). `model.backend = "auto"` takes
  llama.cpp when `llama-cpp-python` is installed: the served model is exported to GGUF
  (`model.gguf_type`) and run by `chatbot.llamacpp.LlamaCppBackend` (continuous batching over
  `model.max_concurrent` cache slots). `HOME/config.toml` may set another `gguf_type` to compare types.
- cached: the product path with `model.passage_cache = "on"` (chatbot/passage_cache.py).
- transformers: the same served model through `TransformersBackend` (float32), the path before llama.cpp.
- undrafted: the product path with `model.draft_tokens = 0` (no prompt-lookup drafts), the baseline of
  the drafts.
- reference: llama.cpp itself (`llama_cpp.Llama.generate`, no product code) on the bundled
  SmolLM2-135M-Instruct Q4_1 GGUF, what a user of Ollama or llama.cpp runs, with the product's llama.cpp
  options (threads, batch, flash attention).

Prompts: two typical ones built by the product (`chatbot.prompt.build_messages`): a customer question with
4 FAQ answers and one ~150-word policy passage (shipping; returns), padded with further FAQ answers to
about `--prompt-tokens` (600). Runs alternate between them, so llama.cpp's reuse of the previous prompt's
prefix helps only with the shared system prompt, as in real traffic.

- One customer: for each N in `--lengths`, every path is forced to produce exactly N tokens (the
  transformers model's `min_new_tokens`, the llama.cpp backend's `stop_tokens` emptied, the reference's
  loop counting): time to first token (the call to the first non-empty piece) and decode tokens/s (tokens
  after the first piece over the time from the first piece to the last). Medians of `--runs` runs after
  one warm-up; the paths take turns within each run.
- Eight customers: `--concurrency` threads call the product backend at once (N = the first length):
  total tokens/s (all tokens over the time from the first call to the last piece), time to first token
  p50/p95, and the ratio of the total to the single-stream decode rate.
- Batched decoding: 1, 2, 4 and `--concurrency` requests at once with a short prompt (the question
  alone, so that prefill is negligible), N = the first length: tokens/s in total.
- Passage cache: the product path with `model.passage_cache = "on"`, its blocks computed once before the
  runs (as after an ingest): time to first token single and with `--concurrency` customers at once,
  against the reference's prefill of the whole prompt (targets: a third, and 1.3x), and the cache's memory
  per token, for the bench prompts, the demo knowledge base and 10,000 passages (f16, and q8_0 by size).
- Natural replies: the first `--questions` (24) answerable questions of data/eval/answers.csv, each with
  the passages the product retrieves for it, answered by the product with and without drafts and by the
  reference (greedy, normal stopping, `model.max_new_tokens`), in turn: decode tokens/s over all replies,
  how many of the product's replies are the same with and without drafts, and how many draft tokens were
  taken. Forced lengths run on past the reply's end into new chat turns that copy the prompt's template,
  which drafts guess well: this section is the fair measure of drafts.
- The served route: the same questions (`answer.mode = generate`) through `POST /v1/chat/completions`
  (`stream: true`) of `supportbot serve` on this home, through `SupportBot.ask` in this process, and the
  model alone on the prompt the engine built, and llama.cpp itself on the GGUF the product serves producing
  as many tokens from that prompt, in turn: seconds to whole replies (the route sends a reply once the
  policy has checked it whole), so that the route's time splits into the model, the rest of a turn
  (retrieval, policy checks, logging) and the web server, against llama.cpp's own.
- Retrieval half of a turn: `kb.search` (query embedding, FAISS, FTS5, fusion) on the demo knowledge base
  for the two questions, median ms.
- Start-up: `supportbot serve` on the warm home in a child process: seconds until `/v1/models` answers
  (the model is loaded before the server listens), and its resident memory after one chat turn.

Run from the repository root, on an otherwise idle machine (other processes' CPU use is recorded):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation.py                    # temporary home
    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation.py --home /tmp/genhome  # reuse the converted model

Options: `--runs N` (5), `--questions N` (24), `--lengths 64,128`, `--prompt-tokens 600`, `--concurrency 8`, `--threads N`
(`model.threads`; 0 = all cores), `--out PATH` (JSON, default bench/results/generation.json),
`--no-startup`. The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
# Python puts this file's folder first on the path; bench/retrieval.py would then shadow the `retrieval`
# package that `chatbot` imports. Drop the folder and put the repository root first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from chatbot import load_config, make_backend, open_kb  # noqa: E402
from chatbot.backends import Backend, Messages, TransformersBackend  # noqa: E402
from chatbot.config import AnswerSettings, Config  # noqa: E402
from chatbot.engine import passage_bodies  # noqa: E402
from chatbot.model import bundled_gguf  # noqa: E402
from chatbot.prompt import Source, build_messages, passage_pieces  # noqa: E402

DATA = ROOT / "data"
FAQ_FILE = DATA / "kb" / "faq.csv"
POLICY_WORDS = 150
BUSY_CORES = 0.25  # other processes' load above which a run's timings are flagged
START = time.perf_counter()


@dataclass(frozen=True)
class PromptSpec:
    """A typical support turn: the question, the FAQ answers retrieval would bring, one policy passage."""

    question: str
    faq_ids: tuple[str, ...]
    policy_file: str
    policy_heading: str
    padding_ids: tuple[str, ...]


PROMPTS = (
    PromptSpec(
        "Hi, I ordered a patio umbrella on Friday afternoon with standard shipping. When will it arrive, "
        "and do I have to pay for shipping on a $62 order?",
        ("ship-free-shipping", "ship-expedited", "ship-carriers", "ship-tracking-link"),
        "shipping-policy.md", "Order processing and cut-off times",
        ("ship-overnight-cost", "ship-alaska-hawaii", "ship-canada", "ship-po-box", "ship-methods"),
    ),
    PromptSpec(
        "Hello, I bought a patio chair three weeks ago and the colour is wrong. Can I still send it back, "
        "and who pays for the return shipping?",
        ("ret-return-window", "ret-return-shipping-fee", "ret-how-to-start", "ret-exchange"),
        "returns-policy.md", "Return shipping costs",
        ("ret-drop-off", "ret-opened-items", "ret-partial", "ret-late-return", "ret-furniture"),
    ),
)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def busy_cpu_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (the `cpu` line of /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Cores kept busy by other processes between start() and stop(): this machine is shared, and a
    timing taken while something else runs is not comparable."""

    def start(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), busy_cpu_seconds(), time.process_time()

    def stop(self) -> float:
        wall = time.perf_counter() - self.wall
        other = (busy_cpu_seconds() - self.busy) - (time.process_time() - self.own)
        return round(max(0.0, other) / wall, 2)


# --- the typical prompt -------------------------------------------------------------------------------


def faq_entries(path: Path) -> dict[str, dict[str, str]]:
    """FAQ rows by entry id (rows sharing an id are question variants of one answer: keep the first)."""
    with path.open(newline="", encoding="utf-8") as handle:
        entries: dict[str, dict[str, str]] = {}
        for row in csv.DictReader(handle):
            entries.setdefault(row["id"], row)
        return entries


def policy_passage(path: Path, heading: str, words: int) -> str:
    """The text under a Markdown heading (subsections included), cut after the sentence that reaches
    `words` words."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == heading)
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    body: list[str] = []
    for line in lines[start + 1:]:
        if re.match(rf"#{{1,{level}}} ", line):
            break
        if line.strip() and not line.startswith("#"):
            body.append(line.strip())
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(body))
    kept: list[str] = []
    while sentences and sum(len(s.split()) for s in kept) < words:
        kept.append(sentences.pop(0))
    return " ".join(kept)


def faq_source(number: int, row: dict[str, str]) -> Source:
    return Source(number, row["id"], row["title"], row["answer"], row.get("url", ""), round(0.9 - 0.05 * number, 2))


def typical_sources(spec: PromptSpec, extra: int) -> list[Source]:
    """4 FAQ answers, one policy passage, then `extra` more FAQ answers (padding)."""
    entries = faq_entries(FAQ_FILE)
    sources = [faq_source(i + 1, entries[entry_id]) for i, entry_id in enumerate(spec.faq_ids)]
    passage = policy_passage(DATA / "kb" / spec.policy_file, spec.policy_heading, POLICY_WORDS)
    sources.append(Source(len(sources) + 1, spec.policy_file, spec.policy_heading, passage, score=0.6))
    for entry_id in spec.padding_ids[:extra]:
        sources.append(faq_source(len(sources) + 1, entries[entry_id]))
    return sources


@dataclass
class Prompt:
    question: str
    messages: Messages
    ids: list[int]  # with the chat template, as every path sees them
    passages: int
    blocks: list[str] = field(default_factory=list)  # the passages as the prompt shows them (for the cache)


def typical_prompt(spec: PromptSpec, backend: Backend, target_tokens: int, reply_tokens: int) -> Prompt:
    """The product's messages for `spec`, padded with further FAQ answers while under `target_tokens`."""
    for extra in range(len(spec.padding_ids) + 1):
        messages, kept, _ = build_messages(AnswerSettings(), typical_sources(spec, extra), [], spec.question,
                                           backend.count_tokens, reply_tokens)
        ids = prompt_token_ids(backend, messages)
        if len(ids) >= target_tokens * 0.95:
            break
    return Prompt(spec.question, messages, ids, len(kept), passage_pieces(kept))


def prompt_token_ids(backend: Backend, messages: Messages) -> list[int]:
    ids = backend.prompt_ids(messages)
    return ids if isinstance(ids, list) else ids["input_ids"][0].tolist()


# --- one run of each path -----------------------------------------------------------------------------


@dataclass
class Run:
    ttft_s: float  # call to the first non-empty piece (first token for the reference)
    decode_tok_s: float  # tokens after the first piece / (last piece - first piece)
    total_s: float
    tokens: int
    decoded: int = 0  # tokens after the first one, over decode_s seconds
    decode_s: float = 0.0
    text: str = ""


@contextmanager
def forced_length(backend: Backend, n: int | None) -> Iterator[None]:
    """The backend produces exactly n tokens (None: its normal stopping), serving code unchanged."""
    if isinstance(backend, TransformersBackend):
        saved, backend.model.generation_config.min_new_tokens = backend.model.generation_config.min_new_tokens, n
        try:
            yield
        finally:
            backend.model.generation_config.min_new_tokens = saved
        return
    saved = backend.stop_tokens
    backend.stop_tokens = set() if n else saved
    try:
        yield
    finally:
        backend.stop_tokens = saved


def product_run(backend: Backend, prompt: Prompt, n: int) -> Run:
    started = time.perf_counter()
    generation = backend.generate(prompt.messages, max_new_tokens=n, passages=prompt.blocks)
    first_at = last_at = None
    first = ""
    for piece in generation:
        if not piece:
            continue
        last_at = time.perf_counter()
        if first_at is None:
            first_at, first = last_at, piece
    total = time.perf_counter() - started
    if first_at is None:  # nothing printable came out
        return Run(float("nan"), float("nan"), total, generation.completion_tokens)
    after_first = generation.completion_tokens - backend.count_tokens(first)
    span = last_at - first_at
    rate = after_first / span if span > 0 and after_first > 0 else float("nan")
    return Run(first_at - started, rate, total, generation.completion_tokens, after_first, span, generation.text)


def reference_run(llm, prompt: Prompt, n: int, repetition_penalty: float, stop: frozenset[int] = frozenset()) -> Run:
    """llama.cpp's own generate loop, greedy: n tokens, or fewer at a `stop` token."""
    started = time.perf_counter()
    first_at = now = started
    count = 0
    for token in llm.generate(prompt.ids, reset=True, temp=0.0, top_k=0, top_p=0.95, min_p=0.0,
                          repeat_penalty=repetition_penalty):
        if token in stop:
            break
        count += 1
        now = time.perf_counter()
        if count == 1:
            first_at = now
        if count >= n:
            break
    rate = (count - 1) / (now - first_at) if now > first_at else float("nan")
    return Run(first_at - started, rate, now - started, count, max(0, count - 1), now - first_at)


# --- results ------------------------------------------------------------------------------------------


@dataclass
class PathResult:
    """Medians over the runs of one path at one length, with every run kept."""

    path: str
    max_new_tokens: int
    runs: list[Run]
    ttft_s: float = 0.0
    decode_tok_s: float = 0.0
    total_s: float = 0.0
    tokens: float = 0.0

    def __post_init__(self) -> None:
        self.ttft_s = median([r.ttft_s for r in self.runs])
        self.decode_tok_s = median([r.decode_tok_s for r in self.runs])
        self.total_s = median([r.total_s for r in self.runs])
        self.tokens = median([r.tokens for r in self.runs])


@dataclass
class ConcurrentResult:
    customers: int
    max_new_tokens: int
    wall_s: float
    tokens: int
    total_tok_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    single_stream_tok_s: float
    ratio: float  # total / single stream


@dataclass
class CacheResult:
    """The passage cache: its times against the reference's prefill of the same prompts, and its size."""

    ttft_s: float  # single customer, blocks cached
    reference_ttft_s: float  # llama.cpp prefilling the whole prompt
    ratio: float  # target <= 1/3
    concurrent_p95_s: float
    concurrent_ratio: float  # p95 over the reference's single prefill, target <= 1.3
    blocks: int
    tokens: int  # cached tokens
    bytes_per_token: int  # f16 keys and values, all layers
    q8_bytes_per_token: int  # the same in q8_0 (34 bytes per 32 values), by size
    demo_passages: int
    demo_tokens: int
    budget_mib: int
    per_10k_passages_gib: float  # at the demo KB's mean passage length


@dataclass
class DraftResult:
    questions: int
    tokens: int
    drafted_tok_s: float  # decode rate over all replies, product with drafts
    undrafted_tok_s: float
    ratio: float
    reference_tok_s: float  # llama.cpp on the bundled GGUF, its own replies to the same prompts
    reference_ratio: float
    same_replies: int
    drafted: int  # draft tokens checked
    taken: int


@dataclass
class RouteResult:
    """Sums over the questions of the time to a whole reply, by how much of the product it went through."""

    questions: int  # those the model answered (a hand-off before generation has nothing to split)
    tokens: int  # reply tokens, by the engine's count
    route_s: float  # POST /v1/chat/completions with stream: true, until the last event
    engine_s: float  # SupportBot.ask in this process
    model_s: float  # the product backend alone on the engine's prompt
    llama_cpp_s: float  # llama.cpp itself on the GGUF the product serves, as many tokens from the same prompt
    route_tok_s: float  # reply tokens over the seconds to whole replies
    llama_cpp_tok_s: float
    ratio: float  # route / llama.cpp


@dataclass
class Results:
    machine: str
    cpu_count: int
    threads: int
    python: str
    versions: dict[str, str]
    served_version: str
    product_backend: str
    gguf_type: str
    repetition_penalty: float
    runs: int
    prompt_tokens: list[int]
    passages: list[int]
    natural_reply: str  # the product's unforced reply to the first prompt
    load_average_before: float
    backend_load_s: dict[str, float]
    single: list[PathResult] = field(default_factory=list)
    other_load: list[float] = field(default_factory=list)  # cores busy with other processes, per run
    concurrent: ConcurrentResult | None = None
    cache: CacheResult | None = None
    cache_concurrent: ConcurrentResult | None = None
    decode_by_width: dict[int, float] = field(default_factory=dict)  # requests at once -> total tok/s, short prompts
    drafts: DraftResult | None = None
    retrieval_ms_p50: float = 0.0
    route: RouteResult | None = None
    startup_s: float | None = None
    server_rss_mib: float | None = None
    peak_rss_mib: float = 0.0
    load_average_after: float = 0.0


# --- the benchmark ------------------------------------------------------------------------------------


def progress(stage: str, done: int, total: int) -> None:
    log(f"{stage} {done}/{total}")


def prepare_home(home: Path, threads: int) -> Config:
    """A home with the demo knowledge base; its serving version is the committed demo adapter."""
    config = load_config(home, [f"model.threads={threads}"] if threads else [], env={})
    kb = open_kb(config)
    if not kb.store.counts()["entries"]:
        log("ingesting data/kb")
        kb.add([DATA / "kb"])
    kb.close()
    return config


def timed(load: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    return load(), round(time.perf_counter() - started, 3)


def load_paths(config: Config):
    """(product backend, the same without drafts, the same with the passage cache, transformers backend,
    reference llama.cpp on the bundled GGUF, load seconds).
    Loading the product first exports the served model to GGUF (once per home) and converts the bundled
    model (once per home): those one-off costs are in its load time on a fresh home."""
    from llama_cpp import Llama

    from chatbot.llamacpp import LlamaCppBackend

    product, product_s = timed(lambda: make_backend(config, progress))
    if not isinstance(product, LlamaCppBackend):
        sys.exit("bench/generation.py compares with llama.cpp: install it (pip install -e '.[llamacpp]')")
    undrafted = make_backend(load_config(config.home, [f"model.threads={config.model.threads}", "model.draft_tokens=0"], env={}))
    plain = load_config(config.home, [f"model.threads={config.model.threads}", "model.backend=transformers"], env={})
    transformers_path, transformers_s = timed(lambda: make_backend(plain, progress))
    cached = make_backend(load_config(config.home, [f"model.threads={config.model.threads}", "model.passage_cache=on"], env={}))
    decoder = product.decoder  # the reference gets the product's context settings
    reference, reference_s = timed(lambda: Llama(model_path=str(bundled_gguf()), n_ctx=decoder.context, n_threads=decoder.threads,
                                                 n_batch=decoder.batch_size, flash_attn=True, verbose=False))
    return product, undrafted, cached, transformers_path, reference, {
        "product": product_s, "transformers": transformers_s, "reference": reference_s}


def measure_single(paths: dict[str, Callable[[Prompt, int], Run]], prompts: list[Prompt], n: int, runs: int,
                   other: list[float]) -> list[PathResult]:
    """One warm-up, then `runs` runs in which every path answers the same prompt in turn."""
    kept: dict[str, list[Run]] = {name: [] for name in paths}
    meter = OtherLoad()
    for i in range(runs + 1):
        prompt = prompts[i % len(prompts)]
        meter.start()
        done = {name: run(prompt, n) for name, run in paths.items()}
        if i == 0:
            log(f"N={n}: warm-up done")
            continue
        other.append(meter.stop())
        for name, run in done.items():
            kept[name].append(run)
        log(f"N={n} run {i}/{runs}: " + "; ".join(f"{name} ttft {r.ttft_s * 1000:.0f} ms {r.decode_tok_s:.1f} tok/s"
                                                  for name, r in done.items()) + f"; other processes {other[-1]:.2f} cores")
    return [PathResult(name, n, runs_) for name, runs_ in kept.items()]


def measure_concurrent(backend: Backend, prompts: list[Prompt], n: int, customers: int, single_tok_s: float) -> ConcurrentResult:
    """`customers` requests started at once on the product backend, each forced to n tokens."""
    started: list[tuple[float, Run]] = []
    gate = threading.Barrier(customers)

    def customer(number: int) -> None:
        gate.wait()
        t0 = time.perf_counter()
        started.append((t0, product_run(backend, prompts[number % len(prompts)], n)))

    threads = [threading.Thread(target=customer, args=(i,)) for i in range(customers)]
    with forced_length(backend, n):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    first = min(t0 for t0, _ in started)
    wall = max(t0 + run.total_s for t0, run in started) - first
    tokens = sum(run.tokens for _, run in started)
    ttfts = sorted(t0 - first + run.ttft_s for t0, run in started)
    rate = tokens / wall
    return ConcurrentResult(customers, n, round(wall, 2), tokens, round(rate, 1), round(median(ttfts), 2),
                            round(percentile(ttfts, 95), 2), round(single_tok_s, 1), round(rate / single_tok_s, 2))


def measure_drafts(config: Config, product, undrafted, reference, count: int) -> DraftResult:
    """Real support turns: each question with the passages the product retrieves for it, answered by both
    product backends and by the reference (its own, different replies) in turn; decode rate = tokens after
    the first piece over the time after it, summed over the replies."""
    from chatbot import SupportBot

    with (DATA / "eval" / "answers.csv").open(newline="", encoding="utf-8") as handle:
        questions = [row["question"] for row in csv.DictReader(handle) if row["answer"]][:count]
    bot = SupportBot(config, backend=product)
    n = config.model.max_new_tokens
    turns = [build_messages(config.answer, bot.sources(bot.retrieve(q, [])), [], q, product.count_tokens, n)[0] for q in questions]
    drafted, taken = product.decoder.drafted, product.decoder.taken
    runs: dict[str, list[Run]] = {"product": [], "undrafted": [], "reference": []}
    for messages in turns:
        prompt = Prompt("", messages, prompt_token_ids(product, messages), 0)
        for name, backend in (("product", product), ("undrafted", undrafted)):
            runs[name].append(product_run(backend, prompt, n))
        runs["reference"].append(reference_run(reference, prompt, n, config.model.repetition_penalty, frozenset(product.stop_tokens)))
    bot.log.close()
    rate = {name: sum(r.decoded for r in kept) / sum(r.decode_s for r in kept) for name, kept in runs.items()}
    same = sum(a.text == b.text for a, b in zip(runs["product"], runs["undrafted"]))
    return DraftResult(len(turns), sum(r.tokens for r in runs["product"]), round(rate["product"], 1),
                       round(rate["undrafted"], 1), round(rate["product"] / rate["undrafted"], 2),
                       round(rate["reference"], 1), round(rate["product"] / rate["reference"], 2), same,
                       product.decoder.drafted - drafted, product.decoder.taken - taken)


def demo_passage_tokens(config: Config, backend) -> tuple[int, int]:
    """(passages, tokens) of the demo knowledge base's passage bodies as prompts show them (each label is a
    shared block of a few tokens)."""
    kb = open_kb(config)
    bodies = passage_bodies(kb)
    kb.close()
    return len(bodies), sum(backend.count_tokens(body) for body in bodies)


def measure_cache(config: Config, cached, prompts: list[Prompt], single: list[PathResult], concurrent: ConcurrentResult) -> CacheResult:
    cache, layout = cached.decoder.passages, cached.decoder.layout
    n = single[0].max_new_tokens
    ttft = next(r.ttft_s for r in single if r.path == "cached" and r.max_new_tokens == n)
    reference = next(r.ttft_s for r in single if r.path == "reference" and r.max_new_tokens == n)
    values = layout.layers * 2 * layout.row
    passages, tokens = demo_passage_tokens(config, cached)
    per_token = values * 2
    return CacheResult(
        round(ttft, 3), round(reference, 3), round(ttft / reference, 2), concurrent.ttft_p95_s,
        round(concurrent.ttft_p95_s / reference, 2), len(cache.memory), sum(len(s.positions) for s in cache.memory.values()),
        per_token, values * 34 // 32, passages, tokens, config.model.passage_cache_mb,
        round(10_000 * tokens / passages * per_token / 2**30, 1))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def retrieval_ms(config: Config, questions: list[str], repeats: int = 10) -> float:
    """Median time of the retrieval half of a turn on the demo knowledge base."""
    kb = open_kb(config)
    kb.search("warm up")
    times = []
    for _ in range(repeats):
        for question in questions:
            started = time.perf_counter()
            kb.search(question, k=config.answer.passages)
            times.append((time.perf_counter() - started) * 1000)
    kb.close()
    return round(median(times), 1)


def bench_load():
    """bench/load.py's server helpers (start, wait, stop, the OpenAI call)."""
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    load = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    return load


def measure_route(config: Config, product, count: int) -> RouteResult:
    """Each held-out question through the served route, the engine in this process, the model alone and
    llama.cpp itself on the same GGUF, in turn (all generated, greedy; the first question warms each up); the
    server runs on this home in a child process."""
    import copy

    import httpx
    from llama_cpp import Llama

    from chatbot import SupportBot

    with (DATA / "eval" / "answers.csv").open(newline="", encoding="utf-8") as handle:
        warm, *questions = [row["question"] for row in csv.DictReader(handle) if row["answer"]][:count + 1]
    settings = copy.deepcopy(config)
    settings.answer.mode = "generate"
    bot = SupportBot(settings, backend=product)
    alone = make_backend(config)  # its own cache slots: the engine's prompt is not there already
    decoder = product.decoder
    same = Llama(model_path=str(decoder.gguf), n_ctx=decoder.context, n_threads=decoder.threads, n_batch=decoder.batch_size,
                 flash_attn=True, verbose=False)
    load = bench_load()
    port = load.free_port()
    base_url = f"http://{load.HOST}:{port}"
    kept: list[tuple[float, ...]] = []  # route, engine, model, llama.cpp seconds and reply tokens
    with tempfile.TemporaryFile() as output:
        server = load.start_server(config.home, port, [f"model.threads={config.model.threads}", "answer.mode=generate"], output)
        try:
            load.wait_ready(base_url, server, 180)
            with httpx.Client(base_url=base_url) as http:
                load.openai_chat(http, [{"role": "user", "content": warm}], True, "bench-warm", time.monotonic() + 120)
                bot.ask(warm, channel="eval")
                for i, question in enumerate(questions):
                    started = time.perf_counter()
                    load.openai_chat(http, [{"role": "user", "content": question}], True, f"bench-{i}", time.monotonic() + 120)
                    route = time.perf_counter() - started
                    started = time.perf_counter()
                    reply = bot.ask(question, channel="eval")
                    engine = time.perf_counter() - started
                    if not reply.reply_tokens:  # handed off before the model ran: nothing to split
                        continue
                    messages = build_messages(settings.answer, bot.sources(bot.retrieve(question, [])), [], question,
                                              product.count_tokens, settings.model.max_new_tokens)[0]
                    prompt = Prompt(question, messages, prompt_token_ids(product, messages), 0)
                    model = product_run(alone, prompt, settings.model.max_new_tokens).total_s
                    itself = reference_run(same, prompt, reply.reply_tokens, settings.model.repetition_penalty).total_s
                    kept.append((route, engine, model, itself, reply.reply_tokens))
                    log(f"route {i + 1}/{len(questions)}: route {route:.2f} s, engine {engine:.2f} s, model {model:.2f} s, "
                        f"llama.cpp {itself:.2f} s")
        finally:
            load.stop_server(server)
    bot.log.close()
    alone.close()
    route, engine, model, itself, tokens = (sum(column) for column in zip(*kept))
    return RouteResult(len(kept), int(tokens), round(route, 2), round(engine, 2), round(model, 2), round(itself, 2),
                       round(tokens / route, 1), round(tokens / itself, 1), round(itself / route, 2))


def measure_startup(home: Path, threads: int, question: str) -> tuple[float, float]:
    """(seconds until `supportbot serve` answers on this warm home, its resident MiB after one turn),
    with bench/load.py's server helpers."""
    import httpx

    load = bench_load()
    port = load.free_port()
    base_url = f"http://{load.HOST}:{port}"
    with tempfile.TemporaryFile() as output:
        server = load.start_server(home, port, [f"model.threads={threads}"] if threads else [], output)
        try:
            ready = load.wait_ready(base_url, server, 120)
            with httpx.Client(base_url=base_url) as http:
                load.openai_chat(http, [{"role": "user", "content": question}], False, "bench", time.monotonic() + 120)
            status = Path(f"/proc/{server.pid}/status").read_text()
            rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        finally:
            load.stop_server(server)
    return round(ready, 1), round(rss_kib / 1024, 1)


def run_benchmark(home: Path, args: argparse.Namespace) -> Results:
    import llama_cpp
    import torch
    import transformers

    load_before = load_average()
    config = prepare_home(home, args.threads)
    product, undrafted, cached, transformers_path, reference, load_s = load_paths(config)
    lengths = args.lengths
    prompts = [typical_prompt(spec, product, args.prompt_tokens, max(lengths)) for spec in PROMPTS]
    log(f"prompts: {[len(p.ids) for p in prompts]} tokens; unforced run for the natural reply")
    natural = product.generate(prompts[0].messages, max(lengths))
    natural_text = "".join(natural)
    penalty = config.model.repetition_penalty
    paths = {
        "product": lambda prompt, n: product_run(product, prompt, n),
        "undrafted": lambda prompt, n: product_run(undrafted, prompt, n),
        "cached": lambda prompt, n: product_run(cached, prompt, n),
        "transformers": lambda prompt, n: product_run(transformers_path, prompt, n),
        "reference": lambda prompt, n: reference_run(reference, prompt, n, penalty),
    }
    results = Results(
        machine=platform.processor() or platform.machine(), cpu_count=os.cpu_count() or 0,
        threads=args.threads or os.cpu_count() or 0, python=platform.python_version(),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "llama_cpp": llama_cpp.__version__},
        served_version=product.name, product_backend=type(product).__name__, gguf_type=config.model.gguf_type,
        repetition_penalty=penalty, runs=args.runs, prompt_tokens=[len(p.ids) for p in prompts],
        passages=[p.passages for p in prompts], natural_reply=natural_text, load_average_before=load_before,
        backend_load_s=load_s,
    )
    for prompt in prompts:  # the passages' states computed before the runs, as after an ingest
        product_run(cached, prompt, 2)
    for n in lengths:
        with forced_length(product, n), forced_length(undrafted, n), forced_length(cached, n), forced_length(transformers_path, n):
            results.single += measure_single(paths, prompts, n, args.runs, results.other_load)
    single = next(r for r in results.single if r.path == "product" and r.max_new_tokens == lengths[0])
    log(f"{args.concurrency} customers at once")
    results.concurrent = measure_concurrent(product, prompts, lengths[0], args.concurrency, single.decode_tok_s)
    log(f"{results.concurrent}")
    results.cache_concurrent = measure_concurrent(cached, prompts, lengths[0], args.concurrency, single.decode_tok_s)
    results.cache = measure_cache(config, cached, prompts, results.single, results.cache_concurrent)
    log(f"{results.cache}")
    short = Prompt(PROMPTS[0].question, [{"role": "user", "content": PROMPTS[0].question}], [], 0)
    for width in sorted({1, 2, 4, args.concurrency}):
        results.decode_by_width[width] = measure_concurrent(product, [short], lengths[0], width, single.decode_tok_s).total_tok_s
    log(f"natural replies to {args.questions} questions, with and without drafts")
    results.drafts = measure_drafts(config, product, undrafted, reference, args.questions)
    results.retrieval_ms_p50 = retrieval_ms(config, [p.question for p in prompts])
    log(f"the served route, {args.questions} questions")
    results.route = measure_route(config, product, args.questions)
    del product, undrafted, cached, transformers_path, reference
    if not args.no_startup:
        log("start-up of `supportbot serve` on this home")
        results.startup_s, results.server_rss_mib = measure_startup(home, args.threads, PROMPTS[0].question)
    results.peak_rss_mib = peak_rss_mib()
    results.load_average_after = load_average()
    return results


# --- output -------------------------------------------------------------------------------------------


def table(r: Results) -> str:
    lines = [
        f"machine: {r.machine}, {r.cpu_count} CPUs, {r.threads} threads; python {r.python}; "
        + ", ".join(f"{k} {v}" for k, v in r.versions.items()),
        f"served model {r.served_version} via {r.product_backend} ({r.gguf_type}); reference: llama.cpp on the bundled "
        f"Q4_1 GGUF; repetition_penalty {r.repetition_penalty}",
        f"prompts {r.prompt_tokens} tokens ({r.passages} passages + system prompt + question); medians of {r.runs} runs after 1 warm-up",
        "",
        f"{'N':>4} {'path':<14} {'tokens':>6} {'TTFT ms':>8} {'decode tok/s':>12} {'total s':>8} {'decode vs reference':>19}",
    ]
    for n in sorted({x.max_new_tokens for x in r.single}):
        rows = {x.path: x for x in r.single if x.max_new_tokens == n}
        for name, x in rows.items():
            ratio = x.decode_tok_s / rows["reference"].decode_tok_s
            lines.append(f"{n:>4} {name:<14} {x.tokens:>6.0f} {x.ttft_s * 1000:>8.0f} {x.decode_tok_s:>12.1f} {x.total_s:>8.2f} {ratio:>19.2f}")
    c = r.concurrent
    lines += [
        "",
        f"{c.customers} customers at once (product, N={c.max_new_tokens}): {c.total_tok_s} tok/s in total over {c.wall_s} s "
        f"= {c.ratio}x the single-stream {c.single_stream_tok_s} tok/s; TTFT p50 {c.ttft_p50_s} s, p95 {c.ttft_p95_s} s",
        cache_line(r),
        f"natural replies to {r.drafts.questions} held-out questions (retrieved passages, normal stopping; {r.drafts.tokens} tokens): "
        f"decode {r.drafts.drafted_tok_s} tok/s with drafts, {r.drafts.undrafted_tok_s} without ({r.drafts.ratio}x), "
        f"llama.cpp on the bundled GGUF {r.drafts.reference_tok_s} ({r.drafts.reference_ratio}x); "
        f"{r.drafts.same_replies}/{r.drafts.questions} replies the same; draft tokens taken {r.drafts.taken} of {r.drafts.drafted}",
        "decode with short prompts (the question alone), requests at once -> tok/s in total: "
        + ", ".join(f"{w}: {rate}" for w, rate in r.decode_by_width.items()),
        f"retrieval half of a turn (embed + search, demo KB): {r.retrieval_ms_p50} ms median",
        f"the served route, {r.route.questions} questions ({r.route.tokens} reply tokens), seconds to whole replies: "
        f"POST /v1/chat/completions {r.route.route_s}, SupportBot.ask {r.route.engine_s}, the model alone {r.route.model_s}, "
        f"llama.cpp on the same GGUF {r.route.llama_cpp_s}; {r.route.route_tok_s} reply tokens/s through the route, "
        f"{r.route.llama_cpp_tok_s} for llama.cpp ({r.route.ratio}x)",
        f"backend load s: {r.backend_load_s}; start-up of `supportbot serve` to ready: {r.startup_s} s "
        f"(polled each second); its RSS after one turn {r.server_rss_mib} MiB; this process's peak RSS {r.peak_rss_mib:.0f} MiB",
        f"load average {r.load_average_before} before, {r.load_average_after} after; other processes' CPU during the "
        f"runs: max {max(r.other_load):.2f} cores",
    ]
    if max(r.other_load) > BUSY_CORES:
        lines.append(f"WARNING: other processes used over {BUSY_CORES} cores during some runs: timings are not comparable")
    return "\n".join(lines)


def cache_line(r: Results) -> str:
    c, k = r.cache, r.cache_concurrent
    return (f"passage cache: TTFT {c.ttft_s * 1000:.0f} ms = {c.ratio}x llama.cpp's prefill of the whole prompt "
            f"({c.reference_ttft_s * 1000:.0f} ms; target <= 0.33); {k.customers} at once: TTFT p50 {k.ttft_p50_s} s, "
            f"p95 {k.ttft_p95_s} s = {c.concurrent_ratio}x that prefill (target <= 1.3), {k.total_tok_s} tok/s in total; "
            f"{c.blocks} blocks, {c.tokens} tokens cached, {c.bytes_per_token / 1024:.1f} KiB per token "
            f"(q8_0 would be {c.q8_bytes_per_token / 1024:.1f}); demo KB: {c.demo_passages} passages, {c.demo_tokens} tokens "
            f"= {c.demo_tokens * c.bytes_per_token / 2**20:.0f} MiB at one rank each (budget {c.budget_mib} MiB); "
            f"10,000 passages: {c.per_10k_passages_gib} GiB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per length (after 1 warm-up)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "generation.json")
    parser.add_argument("--home", type=Path, help="home folder to prepare and reuse (default: a temporary one)")
    parser.add_argument("--lengths", default="64,128", help="max_new_tokens values, comma-separated")
    parser.add_argument("--prompt-tokens", type=int, default=600, help="pad the passages up to about this prompt length")
    parser.add_argument("--concurrency", type=int, default=8, help="customers at once in the concurrency test")
    parser.add_argument("--questions", type=int, default=24, help="held-out questions answered with and without drafts")
    parser.add_argument("--threads", type=int, default=0, help="model.threads for every path (0: all cores)")
    parser.add_argument("--no-startup", action="store_true", help="skip the `supportbot serve` start-up measurement")
    args = parser.parse_args(argv)
    args.lengths = [int(n) for n in args.lengths.split(",")]
    if args.runs < 1 or min(args.lengths) < 2 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be >= 1 and every length >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-generation-") as tmp:
        results = run_benchmark(args.home or Path(tmp), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    print(table(results))
    log(f"results written to {args.out}")


if __name__ == "__main__":
    main()
