"""The `supportbot` command. Each subcommand wires arguments to the same functions the web app calls.

`--json` prints exactly one JSON object on stdout; progress and logs go to stderr. Errors exit non-zero
with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from chatbot import Config, ConfigError, ConversationLog, LogError, SupportBot, as_dict, load_config, open_kb, save_settings  # noqa: E402
from chatbot.backends import BackendError  # noqa: E402
from chatbot.conversation_eval import evaluate_conversations, load_conversations  # noqa: E402
from chatbot.evaluate import evaluate_answers, load_answer_rows, save_eval  # noqa: E402
from chatbot.gguf_export import EXPORT_TYPES, export_weights  # noqa: E402
from retrieval import EvalFileError, IngestError, evaluate_perturbed, evaluate_retrieval, load_queries  # noqa: E402
from retrieval.database import DatabaseError, redacted  # noqa: E402
from retrieval.perturb import CHOICES as PERTURBATIONS  # noqa: E402

from .progress import TerminalProgress  # noqa: E402
from .jobs import JOB_COMMANDS, exclusive_job  # noqa: E402

COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {}


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text)


# --- kb ---------------------------------------------------------------------------------------------


@command("kb add")
def kb_add(args, config):
    kb = open_kb(config)
    report = kb.add(args.locations, progress=TerminalProgress(not args.quiet), crawl=config.crawl, max_pages=args.max_pages)
    return _ingested(args, report)


@command("kb sync")
def kb_sync(args, config):
    if bool(args.names) == args.all:
        raise CommandError("name the sources to sync, or give --all (see `supportbot kb sources`)")
    report = open_kb(config).sync(args.names, progress=TerminalProgress(not args.quiet), crawl=config.crawl)
    return _ingested(args, report)


def _ingested(args, report) -> int:
    payload = {k: v for k, v in vars(report).items() if k != "ids"}
    notes = "".join(f"\nnote: {n}" for n in report.notes)
    emit(args, payload, (
        f"{report.entries} entries from {', '.join(report.sources)}: {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.removed} removed; {report.embedded} texts embedded in {report.seconds:.1f} s{notes}"
    ))
    return 0


@command("kb sources")
def kb_sources(args, config):
    rows = open_kb(config).sources()
    lines = [f"{'name':36} {'kind':6} {'pages':>5}  {'last sync':25}  location"]
    for s in rows:
        lines.append(f"{s.name[:36]:36} {s.kind:6} {s.pages:>5}  {s.synced_at or '-':25}  {s.location}")
        if s.error:
            lines.append(f"{'':36} last sync failed: {s.error}")
    emit(args, {"sources": [s.to_dict() for s in rows]}, "\n".join(lines))
    return 0


@command("kb list")
def kb_list(args, config):
    rows = open_kb(config).entries(category=args.category, contains=args.contains)
    lines = [f"{'id':32} {'category':28} {'var':>3} {'psg':>3}  title"]
    lines += [f"{r.id[:32]:32} {r.category[:28]:28} {r.variants:>3} {r.passages:>3}  {r.title}" for r in rows]
    emit(args, {"entries": [vars(r) for r in rows]}, "\n".join(lines))
    return 0


@command("kb stats")
def kb_stats(args, config):
    stats = open_kb(config).stats()
    emit(args, stats, "\n".join(f"{k:15} {v}" for k, v in stats.items()))
    return 0


@command("kb remove")
def kb_remove(args, config):
    kb = open_kb(config)
    missing = [i for i in args.ids if kb.entry(i) is None]
    if missing:
        raise CommandError(f"no entry with id '{missing[0]}' in knowledge base '{config.kb}'")
    for entry_id in args.ids:
        kb.remove(entry_id)
    emit(args, {"removed": args.ids}, f"removed {', '.join(args.ids)}")
    return 0


# --- suggestions and the learning loop ---------------------------------------------------------------


@command("kb suggestions")
def kb_suggestions(args, config):
    from training.suggestions import refresh

    bot = open_bot(args, config)
    refresh(bot, config.learn)
    rows = [_suggestion_json(s) for s in bot.log.suggestions(args.status, args.kind)]
    lines = [f"{r['id']:>5}  {r['kind']:9} {r['status']:8} {r['entry_id'][:40]:40} {r['evidence'].get('count', 0):>3}x  "
             f"{(r['questions'] or [r['answer']])[0][:60]!r}" for r in rows]
    emit(args, {"suggestions": rows}, "\n".join(lines) or "no suggestions")
    return 0


@command("kb accept")
def kb_accept(args, config):
    from training.suggestions import SuggestionError, accept

    bot = open_bot(args, config)
    ids = args.ids or ([s["id"] for s in bot.log.suggestions("open", args.kind)] if args.all else [])
    if not ids:
        raise CommandError("kb accept: give suggestion ids, or --all")
    try:
        done = [_suggestion_json(accept(bot, int(i), by="cli")) for i in ids]
    except SuggestionError as err:
        raise CommandError(str(err)) from None
    emit(args, {"suggestions": done}, "\n".join(f"accepted {s['id']} ({s['kind']} {s['entry_id']})" for s in done) or "nothing to accept")
    return 0


@command("kb reject")
def kb_reject(args, config):
    return _decide(args, config, "reject")


@command("kb revert")
def kb_revert(args, config):
    return _decide(args, config, "revert")


def _decide(args, config, how: str) -> int:
    from training import suggestions

    bot = open_bot(args, config)
    try:
        done = [_suggestion_json(getattr(suggestions, how)(bot, int(i), by="cli")) for i in args.ids]
    except suggestions.SuggestionError as err:
        raise CommandError(str(err)) from None
    emit(args, {"suggestions": done}, "\n".join(f"{s['status']} {s['id']} ({s['kind']} {s['entry_id']})" for s in done))
    return 0


@command("learn")
def learn_command(args, config):
    from training.learn import learn

    log = (lambda line: print(line, file=sys.stderr)) if not args.quiet else None
    report = learn(config, train=not args.no_train, progress=TerminalProgress(not args.quiet), log=log)
    emit(args, report.to_json(), report.markdown() + f"report: {report.report}")
    return 0


def _suggestion_json(row: dict) -> dict:
    return {k: row[k] for k in ("id", "kind", "entry_id", "questions", "answer", "previous", "evidence", "status", "created_at")}


# --- search and eval --------------------------------------------------------------------------------


@command("search")
def search(args, config):
    hits = open_kb(config).search(args.query, k=args.k, mode=args.mode)
    lines = [f"{i}. [{h.entry_id}] {h.title}  (score {h.score:.4f}, confidence {h.confidence:.2f})" for i, h in enumerate(hits, 1)]
    emit(args, {"query": args.query, "results": [h.to_dict() for h in hits]}, "\n".join(lines) or "no results")
    return 0


@command("eval retrieval")
def eval_retrieval(args, config):
    kb = open_kb(config)
    rows = load_queries(args.file, kb)
    bar = TerminalProgress(not args.quiet)
    report = evaluate_retrieval(kb, rows, mode=args.mode, progress=lambda d, t: bar("queries", d, t))
    summary = report.summary()
    if args.perturb:
        summary["perturbed"] = evaluate_perturbed(kb, rows, args.perturb, args.mode, progress=lambda d, t: bar(args.perturb, d, t))
    try:  # before saving anything: the fit may refuse
        weights = report.fit_calibration() if args.calibrate else None
    except ValueError as err:
        raise CommandError(f"{args.file}: {err}") from None
    save_eval(config.home, "retrieval", f"{kb.embedder.path.name}:{args.mode}", summary)
    if weights:
        save_settings(config, {"retrieval.calibration": weights})
        summary["calibration"] = weights
        print(f"calibration {weights} saved to {config.config_file}", file=sys.stderr)
    lines = [f"{k:16} {v}" for k, v in summary.items() if k != "perturbed"]
    lines += [f"perturbed {kind:9} top1 {r['top1']} (clean {summary['top1']}), recall@5 {r['recall_at_5']}, MRR {r['mrr']}"
              for kind, r in summary.get("perturbed", {}).items()]
    lines += [f"miss line {m['line']}: {m['query']!r} expected {m['expected']} got {m['got']}" for m in report.misses[: args.misses]]
    emit(args, summary, "\n".join(lines))
    return 0


# --- answering --------------------------------------------------------------------------------------


def open_bot(args, config: Config, log: ConversationLog | None = None) -> SupportBot:
    return SupportBot(config, open_kb(config), log=log, progress=TerminalProgress(not args.quiet))


@command("ask")
def ask(args, config):
    reply = open_bot(args, config).ask(args.question, args.conversation, channel="cli")
    sources = "".join(f"\n  [{s.number}] {s.title} ({s.entry_id}, {s.score:.2f})" for s in reply.sources)
    status = f"handed off: {reply.reason}" if reply.handed_off else f"{reply.mode}, confidence {reply.confidence:.2f}"
    emit(args, reply.to_json(), f"{reply.text}\n\n({status}; {reply.latency_ms:.0f} ms){sources}")
    return 0


@command("chat")
def chat(args, config):
    bot = open_bot(args, config)
    conversation = None
    print(f"Chatting with the {config.answer.company} assistant. /new starts over, /quit or Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip() == "/new":
            conversation = None
            continue
        response = bot.respond(line, conversation, channel="cli")
        print("bot> ", end="", flush=True)
        streamed = "".join(print(piece, end="", flush=True) or piece for piece in response)
        reply = response.reply
        if reply.text != streamed:
            print(f"\n(final) {reply.text}", end="")
        cited = ", ".join(f"[{s.number}] {s.title}" for s in reply.sources)
        print(f"\n   {'handed off to a person' if reply.handed_off else cited}")
        conversation = reply.conversation_id


@command("eval answers")
def eval_answers(args, config):
    import tempfile

    if args.limit < 0:
        raise CommandError(f"--limit {args.limit}: expected 0 (all rows) or more")
    if args.rows and not Path(args.rows).resolve().parent.is_dir():  # found out before the evaluation, not after
        raise CommandError(f"--rows {args.rows}: folder {Path(args.rows).resolve().parent} does not exist")
    rows = load_answer_rows(args.file)[: args.limit or None]
    if args.mode:
        config.answer.mode = args.mode
    with tempfile.TemporaryDirectory() as tmp:  # evaluation turns stay out of the customers' log
        bot = open_bot(args, config, ConversationLog(Path(tmp) / "eval.sqlite", config.answer.redact))
        bar = TerminalProgress(not args.quiet)
        report = evaluate_answers(bot, rows, bot.kb.embedder, progress=lambda d, t: bar("questions", d, t))
    if args.rows:
        Path(args.rows).write_text("".join(json.dumps(r) + "\n" for r in report.rows), encoding="utf-8")
    summary = report.summary()
    save_eval(config.home, "answers", f"{bot.backend.name}:{config.answer.mode}", summary)
    lines = [f"{k:20} {v}" for k, v in summary.items() if k != "by_band"]
    lines += [f"band {b['band']} {b['mode']:8} n={b['n']:<4} similarity {b['similarity']}" for b in report.by_band]
    emit(args, summary, "\n".join(lines))
    return 0


@command("eval conversations")
def eval_conversations(args, config):
    import tempfile

    conversations = load_conversations(args.file)
    if args.mode:
        config.answer.mode = args.mode
    with tempfile.TemporaryDirectory() as tmp:  # evaluation turns stay out of the customers' log
        bot = open_bot(args, config, ConversationLog(Path(tmp) / "eval.sqlite", config.answer.redact))
        bar = TerminalProgress(not args.quiet)
        report = evaluate_conversations(bot, conversations, progress=lambda d, t: bar("conversations", d, t))
    if args.rows:
        Path(args.rows).write_text("".join(json.dumps(r) + "\n" for r in report.rows), encoding="utf-8")
    summary = report.summary()
    lines = [f"{'turn kind':10} {'n':>4} {'in conversation':>16} {'asked alone':>12} {'ratio':>6}"]
    lines += [f"{k['kind']:10} {k['n']:>4} {k['correct']:>16.3f} {k['correct_alone']:>12.3f} {k['ratio'] or 0:>6.3f}" for k in report.by_kind]
    lines += [f"{'all':10} {report.turns:>4} {report.correct:>16.3f} {report.correct_alone:>12.3f}",
              f"hand-off precision {report.handoff_precision:.3f}, recall {report.handoff_recall:.3f} "
              f"({report.conversations} conversations)"]
    emit(args, summary, "\n".join(lines))
    return 0


# --- the learning loop ------------------------------------------------------------------------------


@command("logs export")
def logs_export(args, config):
    from training import export_logs

    if args.format != "jsonl":
        raise CommandError(f"--format {args.format}: only jsonl is supported")
    bot = SupportBot(config, open_kb(config), progress=TerminalProgress(not args.quiet))
    report = export_logs(bot, Path(args.out), args.heldout if args.heldout is not None else config.gate.heldout_share,
                         progress=TerminalProgress(not args.quiet))
    lines = [f"{kind:7} train {c['train']:>5}  held-out {c['heldout']:>5}" for kind, c in report.counts.items()]
    emit(args, {"counts": report.counts, "files": report.files}, "\n".join(lines + [f"written to {args.out}"]))
    return 0


@command("train")
def train_command(args, config):
    if args.method == "retriever":
        return train_retriever_command(args, config)
    from training import LEARNING_RATES, RunRequest, TrainSettings, run_training

    settings = TrainSettings(
        epochs=1.0 if args.epochs is None else args.epochs, max_steps=args.max_steps,
        batch_size=4 if args.batch_size is None else args.batch_size, grad_accum=args.grad_accum,
        lora=not args.full, lora_r=args.lora_r, lora_layers=args.lora_layers, max_length=args.max_length, threads=args.threads, seed=args.seed,
        learning_rate=args.lr or LEARNING_RATES[args.method] / (1 if not args.full else 10), block_attention=args.block_attention,
    )
    request = RunRequest(args.method, settings, data=args.data or [], parent=args.parent or "", kb_seed=not args.no_kb_seed,
                         seed_variants=args.seed_variants, out_of_scope=args.out_of_scope, worked=args.worked)
    log = (lambda line: print(line, file=sys.stderr)) if not args.quiet else None
    card = run_training(config, request, TerminalProgress(not args.quiet), log)
    train = card.metrics["train"]
    emit(args, card.to_json(), f"trained {card.version} ({card.kind}, from {card.parent or card.base}): "
         f"{train.get('examples')} examples, {train.get('steps')} steps, loss {train.get('train_loss', float('nan')):.4f}, "
         f"{train.get('seconds', 0):.0f} s\npromote it with: supportbot models promote {card.version}")
    return 0


def train_retriever_command(args, config):
    """Contrastive fine-tuning of the embedder; the flags not given keep RetrieverSettings' defaults."""
    from training.retriever import RetrieverSettings, run_retriever

    if args.data:
        raise CommandError("train retriever: --data is not supported (the pairs come from the knowledge base and the log)")
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr}
    if args.epochs is not None:  # asked for: not cut by the pair budget
        given["pair_budget"] = 0
    settings = RetrieverSettings(max_steps=args.max_steps, max_variants=args.max_variants, hard_negatives=not args.no_hard_negatives,
                                 perturbed=args.perturbed, seed=args.seed, threads=args.threads,
                                 **{k: v for k, v in given.items() if v is not None})
    log = (lambda line: print(line, file=sys.stderr)) if not args.quiet else None
    card = run_retriever(config, settings, args.parent or "", TerminalProgress(not args.quiet), log)
    train, heldout = card.metrics["train"], card.metrics.get("heldout")
    lines = [f"trained {card.version} (retriever, from {card.parent or card.settings['start']}): {train['pairs']} pairs "
             f"over {train['keys']} entries and document passages, {train['steps']} steps, loss {train['loss']:.4f}, {train['seconds']:.0f} s"]
    if heldout:
        lines += [f"held-out {mode:6} top-1 {heldout['base'][mode]['top1']:.3f} -> {heldout['trained'][mode]['top1']:.3f}, "
                  f"recall@5 {heldout['base'][mode]['recall_at_5']:.3f} -> {heldout['trained'][mode]['recall_at_5']:.3f} "
                  f"({heldout['variants']} variants, {heldout['logged']} logged questions)" for mode in ("dense", "hybrid")]
    emit(args, card.to_json(), "\n".join(lines + [f"promote it with: supportbot models promote {card.version}"]))
    return 0


@command("models list")
def models_list(args, config):
    from chatbot.versions import open_versions

    with open_versions(config) as versions:
        versions.ensure_base(config.model.path, TerminalProgress(not args.quiet))
        rows = versions.listing()
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    print(f"{'':2}{'version':32} {'kind':9} {'parent':32} created")
    for r in rows:
        print(f"{'* ' if r['serving'] else '  '}{r['version'][:32]:32} {r['kind']:9} {r['parent'][:32]:32} {r['created']}")
    return 0


@command("models promote")
def models_promote(args, config):
    from training import promote

    bar = TerminalProgress(not args.quiet)
    result = promote(config, args.version, force=args.force, progress=bar)
    lines = [f"{r['metric']:18} serving {r['serving']!s:>8}  candidate {r['candidate']!s:>8}  {'ok' if r['ok'] else 'REGRESSION'}" for r in result.rows]
    verdict = f"promoted {result.candidate}" if result.promoted else f"refused {result.candidate}: a metric regressed beyond the tolerance (--force overrides)"
    emit(args, result.to_json(), "\n".join(lines + [verdict, f"report: {result.report}/report.md"]))
    return 0 if result.promoted else 2


@command("models export")
def models_export(args, config):
    from chatbot.versions import open_versions

    with open_versions(config) as versions:
        if args.gguf:
            version = versions.resolve(args.version)
            path, adapter = versions.weights(version)
        else:
            card = versions.export(args.version, Path(args.dir), args.name)
    if args.gguf:  # one file for llama.cpp, Ollama or LM Studio
        export_weights(path, adapter or "", Path(args.dir), args.gguf, args.name or version, TerminalProgress(not args.quiet))
        emit(args, {"version": version, "gguf": args.dir, "type": args.gguf}, f"exported {version} as {args.gguf} GGUF to {args.dir}")
        return 0
    emit(args, card.to_json(), f"exported {args.version} as {card.version} to {args.dir}")
    return 0


@command("models rollback")
def models_rollback(args, config):
    from training import rollback

    version = rollback(config, args.role, TerminalProgress(not args.quiet))
    emit(args, {"serving": version, "role": args.role}, f"now serving {version or 'the configured retriever'}")
    return 0


# --- the web app and its accounts --------------------------------------------------------------------


@command("serve")
def serve_command(args, config):
    from .app import serve
    from .service import ServiceError

    if args.host:
        config.serve.host = args.host
    if args.port:
        config.serve.port = args.port
    print(f"supportbot: serving {config.answer.company} on http://{config.serve.host}:{config.serve.port} "
          f"(knowledge base '{config.kb}', home {config.home})", file=sys.stderr)
    try:
        serve(config, overrides=list(getattr(args, "set", [])))
    except ServiceError as err:
        raise CommandError(str(err)) from None
    return 0


@command("user add")
def user_add(args, config):
    import getpass

    from chatbot.log import open_database

    from .auth import Accounts

    password = getpass.getpass(f"password for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise CommandError("the password needs at least 8 characters")
    db = open_database(config.log_database)
    try:
        Accounts(config.serve.users, db).add(args.name, args.role, password)
    finally:
        db.close()
    emit(args, {"user": args.name, "role": args.role}, f"saved {args.role} account '{args.name}' in {redacted(config.log_database)}")
    return 0


def _api_keys(config: Config):
    from chatbot.log import import_legacy, open_database

    from .apikeys import ApiKeys

    db = open_database(config.log_database)
    import_legacy(db, config.home)
    return ApiKeys(db)


@command("apikey add")
def apikey_add(args, config):
    key = _api_keys(config).add(args.name, args.limit)
    limit = f"{args.limit}/min" if args.limit else f"{config.limits.api_key_per_minute}/min, limits.api_key_per_minute"
    print(f"API key '{args.name}' ({limit}); it is shown only now, keep it secret:", file=sys.stderr)
    emit(args, {"name": args.name, "key": key, "limit": args.limit}, key)
    return 0


@command("apikey list")
def apikey_list(args, config):
    keys = _api_keys(config).list()
    default = config.limits.api_key_per_minute
    lines = [f"{k.name}  created {k.created}  last used {k.last_used or 'never'}  {k.limit or f'{default} (default)'}/min"
             + (f"  revoked {k.revoked}" if k.revoked else "") for k in keys]
    emit(args, {"keys": [k.to_json() for k in keys], "default_limit": default}, "\n".join(lines) or "no API keys")
    return 0


@command("apikey revoke")
def apikey_revoke(args, config):
    key = _api_keys(config).revoke(args.name)
    emit(args, key.to_json(), f"revoked API key '{key.name}'")
    return 0


@command("backup")
def backup_command(args, config):
    from chatbot.backup import backup

    manifest = backup(config.home, Path(args.dir), TerminalProgress(not args.quiet))
    elsewhere = (f"; the conversation log is in {redacted(config.storage.database_url)}: back it up with pg_dump"
                 " (docs/operations.md)") if config.storage.database_url else ""
    emit(args, manifest, f"backed up {config.home} to {args.dir} ({len(manifest['databases'])} databases){elsewhere}")
    return 0


@command("restore")
def restore_command(args, config):
    from chatbot.backup import restore

    manifest = restore(Path(args.dir), config.home, TerminalProgress(not args.quiet))
    emit(args, manifest, f"restored {args.dir} into {config.home}")
    return 0


@command("db upgrade")
def db_upgrade(args, config):
    from chatbot.log import upgrade
    from retrieval.store import upgrade_store

    report = upgrade(config.log_database)
    report["knowledge_bases"] = {}
    for name in config.kb_names():
        before, after = upgrade_store(config.storage.database_url or config.kb_dir(name) / "kb.sqlite", name)
        report["knowledge_bases"][name] = {"from": before, "to": after}
    lines = [f"{where}: schema at {r['to']}" + (f" (was {r['from'] or 'empty'})" if r["from"] != r["to"] else " (already)")
             for where, r in [(report["database"], report), *((f"knowledge base {n}", r) for n, r in report["knowledge_bases"].items())]]
    emit(args, report, "\n".join(lines))
    return 0


@command("db copy")
def db_copy(args, config):
    from chatbot.log import copy_log
    from chatbot.versions import open_versions
    from retrieval.store import copy_store, stored_names

    if not config.log_file.exists() and not config.local_kb_names():
        raise CommandError(f"{config.home}: nothing to copy (no conversation log, no knowledge base)")
    there = sorted(set(config.local_kb_names()) & set(stored_names(args.to)))
    if there:  # checked before anything is copied, so that a refusal leaves the target as it was
        raise CommandError(f"{redacted(args.to)} already holds knowledge base {there[0]!r}; copy only into a new database")
    with open_versions(config):  # registers the version files an older home kept (serving.json, card.json): copied too
        pass
    report = copy_log(config.log_file, args.to)
    lines = [f"{name}: {table['rows']} rows, checksum {table['checksum']}" for name, table in report["tables"].items()]
    report["knowledge_bases"] = {}
    for name in config.local_kb_names():
        tables = report["knowledge_bases"][name] = copy_store(config.kb_dir(name) / "kb.sqlite", args.to, name)
        lines += [f"knowledge base {name}, {table}: {t['rows']} rows, checksum {t['checksum']}" for table, t in tables.items()]
    emit(args, report, "\n".join([f"copied {config.home} into {report['database']} (checked):", *lines,
                                   f"next: set storage.database_url (or SUPPORTBOT_STORAGE_DATABASE_URL) to it"]))
    return 0


@command("config")
def show_config(args, config):
    print(json.dumps(as_dict(config), indent=2, default=str))
    return 0


# --- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="state folder (default: $SUPPORTBOT_HOME, else ~/.local/share/supportbot)")
    common.add_argument("--kb", default=argparse.SUPPRESS, help="knowledge base name (default: 'default')")
    common.add_argument("--set", action="append", default=argparse.SUPPRESS, metavar="KEY=VALUE", help="override a setting, e.g. retrieval.lexical_weight=0.2")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    parser = argparse.ArgumentParser(prog="supportbot", description="Self-hosted support chatbot.", parents=[common])
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(parent, name, help, json_flag=True):
        p = parent.add_parser(name, help=help, parents=[common])
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    kb = sub.add_parser("kb", help="manage the knowledge base").add_subparsers(dest="kb_cmd", required=True, metavar="ACTION")
    p = add(kb, "add", "add or update entries from help-centre sites, files or folders (CSV, JSON, JSONL, Markdown, "
                       "text, HTML, PDF, DOCX, Zendesk or Intercom exports, zip); each is remembered as a source")
    p.add_argument("locations", nargs="+", metavar="URL|PATH")
    p.add_argument("--max-pages", type=int, default=0, help="a site's crawl limit (default: crawl.max_pages)")
    p = add(kb, "sources", "the sites, files and folders entries came from, with their last sync")
    p = add(kb, "sync", "read sources again: new pages added, changed ones updated, vanished ones removed")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="every source (uploads are updated by uploading them again)")
    p = add(kb, "list", "list entries")
    p.add_argument("--category")
    p.add_argument("--contains", help="filter by text in the id or title")
    add(kb, "stats", "counts and index kind")
    p = add(kb, "remove", "remove entries by id")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = add(kb, "suggestions", "what the log suggests adding or changing (refreshed first)")
    p.add_argument("--kind", choices=["new_entry", "variant", "revision", "flag"])
    p.add_argument("--status", choices=["open", "accepted", "rejected", "reverted"], default="open")
    p = add(kb, "accept", "apply suggestions to the knowledge base")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every open suggestion (of --kind)")
    p.add_argument("--kind", choices=["new_entry", "variant", "revision", "flag"])
    p = add(kb, "reject", "reject suggestions (not proposed again from the same evidence)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = add(kb, "revert", "undo accepted suggestions")
    p.add_argument("ids", nargs="+", metavar="ID")

    p = add(sub, "learn", "refresh suggestions, apply learn.auto_accept, and train and promote what passes the gates")
    p.add_argument("--no-train", action="store_true", help="the knowledge layer only (seconds)")

    p = add(sub, "search", "search the knowledge base")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")

    ev = sub.add_parser("eval", help="evaluate on held-out files").add_subparsers(dest="eval_cmd", required=True, metavar="WHAT")
    p = add(ev, "retrieval", "top-1, recall@5, MRR, latency on a CSV of query,expected_id")
    p.add_argument("file")
    p.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")
    p.add_argument("--calibrate", action="store_true", help="fit the confidence calibration and save it to config.toml")
    p.add_argument("--perturb", choices=PERTURBATIONS, help="also ask every query as a customer in a hurry would type it "
                   "(seeded: typos, lower case, chatty openings; all = each and all together) and report clean against perturbed")
    p.add_argument("--misses", type=int, default=10, help="how many misses to list (text output)")

    p = add(sub, "ask", "answer one question with sources and confidence")
    p.add_argument("question")
    p.add_argument("--conversation", help="continue this conversation id")
    add(sub, "chat", "multi-turn chat in the terminal (streaming)", json_flag=False)
    p = add(ev, "answers", "answer quality on a CSV of question,answer[,expected_id]")
    p.add_argument("file")
    p.add_argument("--mode", choices=["generate", "template", "auto"], help="override answer.mode")
    p.add_argument("--limit", type=int, default=0, help="only the first N rows")
    p.add_argument("--rows", help="write each question's reply and scores to this JSONL file")

    p = add(ev, "conversations", "multi-turn: per-turn top-1 by turn kind, against the same turns asked alone")
    p.add_argument("file")
    p.add_argument("--mode", choices=["generate", "template", "auto"], help="override answer.mode")
    p.add_argument("--rows", help="write each turn's reply and scores to this JSONL file")

    p = add(sub, "serve", "start the web app and the OpenAI-compatible API", json_flag=False)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    user = sub.add_parser("user", help="staff accounts").add_subparsers(dest="user_cmd", required=True, metavar="ACTION")
    p = add(user, "add", "add or replace an agent/ops account (password from standard input)")
    p.add_argument("name")
    p.add_argument("--role", choices=["agent", "ops"], required=True)
    apikey = sub.add_parser("apikey", help="API keys for the OpenAI-compatible route").add_subparsers(dest="apikey_cmd", required=True, metavar="ACTION")
    p = add(apikey, "add", "make a key (printed once, stored hashed), counted by its own rate limit")
    p.add_argument("name")
    p.add_argument("--limit", type=int, help="messages per minute (default: limits.api_key_per_minute)")
    add(apikey, "list", "keys with when they were made and last used, their limit, revoked ones too (never the key)")
    p = add(apikey, "revoke", "refuse a key from now on")
    p.add_argument("name")

    logs = sub.add_parser("logs", help="the conversation log").add_subparsers(dest="logs_cmd", required=True, metavar="ACTION")
    p = add(logs, "export", "training data from the log (redacted, de-duplicated, split by conversation)")
    p.add_argument("--out", required=True, help="folder for <kind>.train.jsonl and <kind>.heldout.jsonl")
    p.add_argument("--format", default="jsonl")
    p.add_argument("--heldout", type=float, help="share of conversations held out (default gate.heldout_share)")

    p = add(sub, "train", "train a new model version from the log and the knowledge base")
    p.add_argument("method", choices=["sft", "kto", "dpo", "reward", "grpo", "retriever"])
    p.add_argument("--data", action="append", help="JSONL file(s) from `logs export` instead of the live log")
    p.add_argument("--no-kb-seed", action="store_true", help="sft/grpo: no examples made from the knowledge base")
    p.add_argument("--from", dest="parent", help="version to continue from (default: the serving one)")
    p.add_argument("--epochs", type=float, help="(default per method)")
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lr", type=float, help="learning rate (default per method)")
    p.add_argument("--batch-size", type=int, help="(default per method)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-layers", type=int, default=0, help="LoRA on the top N layers only (0 = all; faster on a CPU)")
    p.add_argument("--block-attention", action="store_true",
                   help="sft: passages computed apart, as model.passage_cache serves them (docs/serving.md#passage-cache)")
    p.add_argument("--seed-variants", type=int, default=0, help="question variants per KB entry in the seed (0 = all)")
    p.add_argument("--out-of-scope", metavar="FILE",
                   help="questions (one per line) the KB seed teaches to hand off ('' = none; default: the bundled list)")
    p.add_argument("--worked", metavar="FILE", default="",
                   help="sft/grpo: CSV question,answer,expected_id of answers that reason over one entry (worked examples)")
    p.add_argument("--max-variants", type=int, default=0, help="retriever: question variants per entry to train on (0 = all)")
    p.add_argument("--no-hard-negatives", action="store_true",
                   help="retriever: batches of random entries instead of clusters of nearby ones")
    p.add_argument("--perturbed", type=float, default=0.0, metavar="SHARE",
                   help="retriever: train this share of the question pairs again with the question typed in a hurry "
                        "(typos, lower case, chatty; see eval retrieval --perturb)")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)

    models = sub.add_parser("models", help="model versions").add_subparsers(dest="models_cmd", required=True, metavar="ACTION")
    add(models, "list", "versions with their kind, parent and metrics (* = serving)")
    p = add(models, "promote", "run the evaluation gate and serve the version if it passes")
    p.add_argument("version", help="a version name or 'latest'")
    p.add_argument("--force", action="store_true", help="promote even if the gate finds a regression")
    p = add(models, "export", "copy a version (weights and card, without training logs) to a folder, or write it as one GGUF file")
    p.add_argument("version")
    p.add_argument("dir", help="target folder, or the .gguf file with --gguf")
    p.add_argument("--name", help="version name in the exported card or GGUF (default: unchanged)")
    p.add_argument("--gguf", choices=list(EXPORT_TYPES), help="write a GGUF file of this type (adapter merged) for llama.cpp, Ollama, LM Studio")
    p = add(models, "rollback", "serve the previous version again")
    p.add_argument("--role", choices=["lm", "reward", "retriever"], default="lm")

    p = add(sub, "backup", "copy the home consistently, while the app runs, into a new folder")
    p.add_argument("dir")
    p = add(sub, "restore", "copy a backup into an empty home")
    p.add_argument("dir")

    db = sub.add_parser("db", help="the database (storage.database_url)").add_subparsers(dest="db_cmd", required=True, metavar="ACTION")
    add(db, "upgrade", "bring the database's schema to this version's (the app also does it when it starts)")
    p = add(db, "copy", "copy the home's SQLite database (the log, API keys, webhook deliveries) into a new PostgreSQL "
                        "database, checked by counts and checksums")
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://user:password@host:5432/name (an empty database)")

    add(sub, "config", "print the effective configuration", json_flag=False)
    return parser


def command_name(args: argparse.Namespace) -> str:
    parts = (args.cmd, *(getattr(args, f"{name}_cmd", None) for name in ("kb", "eval", "user", "apikey", "logs", "models", "db")))
    return " ".join(x for x in parts if x)


def _as_exclusive_job(name: str, args: argparse.Namespace, config: Config) -> int:
    """A job command on a shared database: one at a time across every replica (ui.jobs.exclusive_job)."""
    from chatbot.log import open_database

    db = open_database(config.storage.database_url)
    try:
        with exclusive_job(db, f"supportbot {name}"):
            return COMMANDS[name](args, config)
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    args.quiet = getattr(args, "quiet", False)
    try:
        overrides = list(getattr(args, "set", []))
        if hasattr(args, "kb"):
            overrides.append(f"kb={args.kb}")
        config = load_config(getattr(args, "home", None), overrides)
        name = command_name(args)
        # Under `accelerate launch` every rank runs the command: the first holds the lock for all.
        if name in JOB_COMMANDS and config.storage.database_url and os.environ.get("RANK", "0") == "0":
            return _as_exclusive_job(name, args, config)
        return COMMANDS[name](args, config)
    except (CommandError, ConfigError, IngestError, EvalFileError, LogError, BackendError, DatabaseError, FileNotFoundError,
            ValueError) as err:
        print(f"supportbot: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("supportbot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
