"""Generation benchmark: speed of the product's serving path for one stream with a typical prompt.

What it measures, always through the product's own code:

- Model: the bundled SmolLM2-135M-Instruct, provisioned with `chatbot.model.provision_bundled` into a
  home folder (a fresh temporary one unless `--home DIR` names one to reuse, which skips the ~20-30 s
  GGUF conversion on later runs) and loaded with `chatbot.backends.TransformersBackend.from_folder`, with
  the serving defaults of `chatbot.config.ModelSettings` (dtype, repetition penalty, concurrency).
- Prompt: `chatbot.prompt.build_messages(AnswerSettings(), sources, [], question, ...)` with 4 shipping
  answers from `data/kb/faq.csv`, one ~150-word passage of `data/kb/shipping-policy.md` and a customer
  question; further FAQ answers are added while the prompt is under `--prompt-tokens` (default 600). Its
  length in tokens (chat template included) is reported.
- Product path: `backend.generate(messages, max_new_tokens=N)`, iterating the returned `Generation`:
  time to first token (from the call to the first non-empty piece; the streamer holds text back to a
  word boundary, so this includes the decode steps of the first word), decode tokens/s (tokens after
  the first piece over the time from the first to the last piece) and total time.
- Baseline, in the same process and on the same input ids (`backend.prompt_ids`): plain
  `model.generate` with the same greedy options but no streamer and no thread. Its prefill time is a
  run with max_new_tokens=1; its decode tokens/s is (N - 1) / (time for N - prefill time).
- The ratio product / baseline of decode tokens/s, for N = 64 and 128 (`--lengths`).

Both paths are forced to produce exactly N tokens, so that their speeds compare: the baseline gets
`min_new_tokens=N`, and the product path gets the same through the model's `generation_config` (the
serving code is unchanged; a model folder can ship that default). Actual token counts are recorded for
every run anyway, and one unforced product run reports how long the model's natural reply is.
Each number is the median of `--runs` runs (default 5) after one warm-up run; product and baseline runs
alternate so that drift in the machine's load hits both alike. The machine is shared and noisy: the CPU
used by other processes during each run (from /proc/stat) is recorded, and the table warns when it was
above a quarter of a core; run it when nothing else is running.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation.py                      # temporary home
    HF_HUB_OFFLINE=1 .venv/bin/python bench/generation.py --home /tmp/genhome  # reuse a converted model

Options: `--runs N`, `--out PATH` (JSON results, default bench/results/generation.json), `--home DIR`,
`--lengths 64,128`, `--prompt-tokens 600`, `--torch-threads N` (as `model.threads` in the config).
The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
# Python puts this file's folder first on the path; bench/retrieval.py would then shadow the `retrieval`
# package that `chatbot` imports. Drop the folder and put the repository root first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from chatbot.backends import Messages, TransformersBackend  # noqa: E402
from chatbot.config import AnswerSettings, ModelSettings  # noqa: E402
from chatbot.model import BUNDLED_NAME, provision_bundled  # noqa: E402
from chatbot.prompt import Source, build_messages  # noqa: E402

FAQ_FILE = ROOT / "data" / "kb" / "faq.csv"
POLICY_FILE = ROOT / "data" / "kb" / "shipping-policy.md"
FAQ_IDS = ("ship-free-shipping", "ship-expedited", "ship-carriers", "ship-tracking-link")
PADDING_IDS = ("ship-overnight-cost", "ship-alaska-hawaii", "ship-canada", "ship-po-box", "ship-methods")
POLICY_HEADING = "Order processing and cut-off times"
POLICY_WORDS = 150
QUESTION = (
    "Hi, I ordered a patio umbrella on Friday afternoon with standard shipping. When will it arrive, "
    "and do I have to pay for shipping on a $62 order?"
)
BUSY_CORES = 0.25  # other processes' load above which a run's timings are flagged
START = time.perf_counter()


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


def typical_sources(extra: int) -> list[Source]:
    """4 FAQ answers, one policy passage, then `extra` more FAQ answers (padding)."""
    entries = faq_entries(FAQ_FILE)
    sources = [faq_source(i + 1, entries[entry_id]) for i, entry_id in enumerate(FAQ_IDS)]
    policy = policy_passage(POLICY_FILE, POLICY_HEADING, POLICY_WORDS)
    sources.append(Source(len(sources) + 1, "shipping-policy", f"Shipping and Delivery Policy > {POLICY_HEADING}", policy, score=0.6))
    for entry_id in PADDING_IDS[:extra]:
        sources.append(faq_source(len(sources) + 1, entries[entry_id]))
    return sources


def prompt_messages(backend: TransformersBackend, target_tokens: int, reply_tokens: int) -> tuple[Messages, int, int]:
    """(chat messages, passages kept, prompt tokens with the chat template) built by the product, padded
    with further FAQ answers while the prompt is under `target_tokens` tokens."""
    for extra in range(len(PADDING_IDS) + 1):
        sources = typical_sources(extra)
        messages, kept, _ = build_messages(AnswerSettings(), sources, [], QUESTION, backend.count_tokens, reply_tokens)
        tokens = int(backend.prompt_ids(messages)["input_ids"].shape[1])
        if tokens >= target_tokens * 0.95:
            break
    return messages, len(kept), tokens


# --- one run of each path -----------------------------------------------------------------------------


@dataclass
class ProductRun:
    ttft_s: float  # call to first non-empty piece
    decode_tok_s: float  # tokens after the first piece / (last piece - first piece)
    total_s: float  # call to the end of the iteration
    completion_tokens: int
    first_piece_tokens: int


@dataclass
class BaselineRun:
    total_s: float
    completion_tokens: int


@contextmanager
def forced_length(model, n: int | None) -> Iterator[None]:
    """The model's default generation config asks for at least n new tokens (None: leave it)."""
    saved = model.generation_config.min_new_tokens
    model.generation_config.min_new_tokens = n if n is not None else saved
    try:
        yield
    finally:
        model.generation_config.min_new_tokens = saved


def product_run(backend: TransformersBackend, messages: Messages, n: int) -> tuple[ProductRun, str]:
    started = time.perf_counter()
    generation = backend.generate(messages, max_new_tokens=n)
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
        return ProductRun(float("nan"), float("nan"), total, generation.completion_tokens, 0), generation.text
    first_tokens = backend.count_tokens(first)
    after_first = generation.completion_tokens - first_tokens
    span = last_at - first_at
    rate = after_first / span if span > 0 and after_first > 0 else float("nan")
    return ProductRun(first_at - started, rate, total, generation.completion_tokens, first_tokens), generation.text


def baseline_options(backend: TransformersBackend, n: int) -> dict:
    """The product's greedy options (TransformersBackend.generate) without the streamer, forced to n tokens."""
    return dict(
        max_new_tokens=n, min_new_tokens=n, do_sample=False, repetition_penalty=backend.repetition_penalty,
        pad_token_id=backend.tokenizer.pad_token_id,
    )


def baseline_run(backend: TransformersBackend, inputs, n: int) -> BaselineRun:
    started = time.perf_counter()
    with torch.inference_mode():
        out = backend.model.generate(**inputs, **baseline_options(backend, n))
    return BaselineRun(time.perf_counter() - started, int(out.shape[1] - inputs["input_ids"].shape[1]))


# --- results ------------------------------------------------------------------------------------------


@dataclass
class LengthResult:
    """Medians for one max_new_tokens, with every run kept."""

    max_new_tokens: int
    product_runs: list[ProductRun]
    baseline_runs: list[BaselineRun]
    baseline_prefill_s: float  # median of the max_new_tokens=1 runs
    other_load: list[float]  # cores busy with other processes during each run (product + baseline + prefill)
    product_ttft_s: float = 0.0
    product_decode_tok_s: float = 0.0
    product_total_s: float = 0.0
    product_tokens: float = 0.0
    baseline_total_s: float = 0.0
    baseline_tokens: float = 0.0
    baseline_decode_tok_s: float = 0.0
    decode_ratio: float = 0.0  # product / baseline decode tokens/s

    def __post_init__(self) -> None:
        runs = self.product_runs
        self.product_ttft_s = median([r.ttft_s for r in runs])
        self.product_decode_tok_s = median([r.decode_tok_s for r in runs])
        self.product_total_s = median([r.total_s for r in runs])
        self.product_tokens = median([r.completion_tokens for r in runs])
        self.baseline_total_s = median([r.total_s for r in self.baseline_runs])
        self.baseline_tokens = median([r.completion_tokens for r in self.baseline_runs])
        decode_s = self.baseline_total_s - self.baseline_prefill_s
        self.baseline_decode_tok_s = (self.baseline_tokens - 1) / decode_s if decode_s > 0 else float("nan")
        self.decode_ratio = self.product_decode_tok_s / self.baseline_decode_tok_s


@dataclass
class Results:
    model: str
    torch_version: str
    transformers_version: str
    torch_threads: int
    cpu_count: int
    python: str
    dtype: str
    repetition_penalty: float
    runs: int
    prompt_tokens: int
    passages: int
    question: str
    natural_reply_tokens: int  # an unforced product run, max_new_tokens = the largest length
    natural_reply: str
    load_average_before: float
    model_load_s: float
    lengths: list[LengthResult] = field(default_factory=list)
    load_average_after: float = 0.0
    peak_rss_mib: float = 0.0


# --- the benchmark ------------------------------------------------------------------------------------


def load_backend(home: Path) -> tuple[TransformersBackend, float]:
    """The bundled model with the serving defaults of ModelSettings, and its load time (conversion aside)."""
    log(f"provisioning the bundled model under {home / 'models'} (20-30 s the first time)")
    path = provision_bundled(home / "models", lambda stage, done, total: log(f"{stage} {done}/{total}"))
    settings = ModelSettings()
    started = time.perf_counter()
    backend = TransformersBackend.from_folder(
        path, BUNDLED_NAME, dtype=settings.dtype, max_concurrent=settings.max_concurrent,
        repetition_penalty=settings.repetition_penalty,
    )
    return backend, time.perf_counter() - started


def measure_length(backend: TransformersBackend, messages: Messages, inputs, n: int, runs: int) -> LengthResult:
    """One warm-up, then `runs` alternating runs of the product path, the baseline and its prefill."""
    product: list[ProductRun] = []
    baseline: list[BaselineRun] = []
    prefill: list[float] = []
    other: list[float] = []
    meter = OtherLoad()
    with forced_length(backend.model, n):
        for i in range(runs + 1):
            meter.start()
            p, _ = product_run(backend, messages, n)
            b = baseline_run(backend, inputs, n)
            f = baseline_run(backend, inputs, 1).total_s
            if i == 0:
                log(f"N={n}: warm-up done")
                continue
            product.append(p)
            baseline.append(b)
            prefill.append(f)
            other.append(meter.stop())
            log(f"N={n} run {i}/{runs}: product ttft {p.ttft_s * 1000:.0f} ms, {p.decode_tok_s:.1f} tok/s "
                f"({p.completion_tokens} tokens); baseline {b.completion_tokens / b.total_s:.1f} tok/s overall, "
                f"prefill {f * 1000:.0f} ms; other processes {other[-1]:.2f} cores")
    return LengthResult(n, product, baseline, median(prefill), other)


def run_benchmark(home: Path, runs: int, lengths: list[int], target_tokens: int) -> Results:
    import transformers

    load_before = load_average()
    backend, load_s = load_backend(home)
    messages, passages, prompt_tokens = prompt_messages(backend, target_tokens, max(lengths))
    inputs = backend.prompt_ids(messages)
    log(f"prompt: {prompt_tokens} tokens, {passages} passages; unforced run for the natural reply length")
    with forced_length(backend.model, None):
        natural, natural_text = product_run(backend, messages, max(lengths))
    settings = ModelSettings()
    results = Results(
        model=backend.name, torch_version=torch.__version__, transformers_version=transformers.__version__,
        torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count() or 0, python=platform.python_version(),
        dtype=settings.dtype, repetition_penalty=backend.repetition_penalty, runs=runs, prompt_tokens=prompt_tokens,
        passages=passages, question=QUESTION, natural_reply_tokens=natural.completion_tokens,
        natural_reply=natural_text, load_average_before=load_before, model_load_s=round(load_s, 3),
    )
    results.lengths = [measure_length(backend, messages, inputs, n, runs) for n in lengths]
    results.load_average_after = load_average()
    results.peak_rss_mib = peak_rss_mib()
    return results


# --- output -------------------------------------------------------------------------------------------


def table(results: Results) -> str:
    r = results
    lines = [
        f"model {r.model} ({r.dtype}, repetition_penalty {r.repetition_penalty}); torch {r.torch_version}, "
        f"transformers {r.transformers_version}, {r.torch_threads} torch threads, {r.cpu_count} CPUs",
        f"prompt {r.prompt_tokens} tokens ({r.passages} passages + system prompt + question); "
        f"natural reply {r.natural_reply_tokens} tokens; medians of {r.runs} runs after 1 warm-up",
        "",
        f"{'N':>4} {'path':<22} {'tokens':>6} {'TTFT/prefill ms':>15} {'decode tok/s':>12} {'total s':>8} {'overall tok/s':>13}",
    ]
    for x in r.lengths:
        lines.append(f"{x.max_new_tokens:>4} {'product (streamed)':<22} {x.product_tokens:>6.0f} {x.product_ttft_s * 1000:>15.0f} "
                     f"{x.product_decode_tok_s:>12.1f} {x.product_total_s:>8.2f} {x.product_tokens / x.product_total_s:>13.1f}")
        lines.append(f"{'':>4} {'baseline model.generate':<22} {x.baseline_tokens:>6.0f} {x.baseline_prefill_s * 1000:>15.0f} "
                     f"{x.baseline_decode_tok_s:>12.1f} {x.baseline_total_s:>8.2f} {x.baseline_tokens / x.baseline_total_s:>13.1f}")
        lines.append(f"{'':>4} {'ratio product/baseline':<22} {'':>6} {x.product_ttft_s / x.baseline_prefill_s:>15.2f} "
                     f"{x.decode_ratio:>12.2f} {x.product_total_s / x.baseline_total_s:>8.2f}")
    lines += [
        "",
        f"model load {r.model_load_s:.2f} s; peak RSS {r.peak_rss_mib:.0f} MiB; "
        f"load average {r.load_average_before} before, {r.load_average_after} after",
        "other processes' CPU during the runs (cores): "
        + "; ".join(f"N={x.max_new_tokens} max {max(x.other_load):.2f}" for x in r.lengths),
    ]
    if any(max(x.other_load) > BUSY_CORES for x in r.lengths):
        lines.append(f"WARNING: other processes used over {BUSY_CORES} cores during some runs: timings are not comparable")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per length (after 1 warm-up)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "generation.json")
    parser.add_argument("--home", type=Path, help="home folder to provision the model into and reuse (default: a temporary one)")
    parser.add_argument("--lengths", default="64,128", help="max_new_tokens values, comma-separated")
    parser.add_argument("--prompt-tokens", type=int, default=600, help="pad the passages up to about this prompt length")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args(argv)
    args.lengths = [int(n) for n in args.lengths.split(",")]
    if args.runs < 1 or min(args.lengths) < 2:
        parser.error("--runs must be >= 1 and every length >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory(prefix="supportbot-bench-generation-") as tmp:
        results = run_benchmark(args.home or Path(tmp), args.runs, args.lengths, args.prompt_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    print(table(results))
    log(f"results written to {args.out}")


if __name__ == "__main__":
    main()
