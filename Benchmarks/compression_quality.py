#!/usr/bin/env python3
"""Prompt compression quality and speed: the sidecar's compressor next to simple baselines, same prompts, same run.

    python Benchmarks/compression_quality.py CLI [--qa fixtures/qa/nq-open-oracle.jsonl.gz] [--split dev|heldout]
        [--ratios 0.5,0.25] [--limit N] [--seed 7] [--out FILE.md] [--json FILE.json]

CLI is the release build of `auto-optimizer` (its `compress --jsonl` subcommand). Data: the NQ-open oracle file
(question, gold answers, gold Wikipedia passage). For each question of the split (dev: lines 0-1599, the only lines
used for tuning; heldout: lines 1600-, reported for honesty, never tuned on) a 20-document context is built the way
"Lost in the Middle" lays it out: the gold passage plus the 19 passages from *other* questions of the split that BM25
ranks highest for this question and that do not contain any gold answer, the gold one at a seeded random position,
each line `Document [i](Title: t) text`. Every compressor gets the context (and, in the "with question" runs, the
question) and a target ratio (fraction of tokens to keep).

Reported per compressor and ratio:
- achieved ratio: sum of compressed o200k_base tokens / sum of original tokens (tiktoken, offline on the shipped
  vocabulary, so counts do not depend on our tokenizer);
- answer retention: share of prompts whose original context contains a gold answer (case-insensitive, whitespace
  collapsed) that still contain one after compression;
- latency per 1k tokens: the sidecar's compressor is timed in-process by the CLI (`--timing`, monotonic clock
  around the compress call, release build, after a warm-up pass); baselines are timed in Python (for scale only).
A separate speed set of ~4k-token prompts (30 documents each) gives p50 / p99 per 1k tokens for the sidecar
(each prompt's fastest of `--passes` passes, default 3; wall time and the thread's CPU time).

Baselines: truncation (keep the first N tokens), random token drop (seeded), stop-word removal (ratio is what it
achieves), BM25 passage selection (whole documents by BM25 score against the question, original order, within the
token budget; with no question it degrades to truncation at document granularity).
"""
import argparse
import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
URL = "https://openaipublic.blob.core.windows.net/encodings/%s.tiktoken"

STOP = set("""a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few for
from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his
how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my myself no nor not of
off on once only or other ought our ours ourselves out over own same shan't she she'd she'll she's should shouldn't so
some such than that that's the their theirs them themselves then there there's these they they'd they'll they're
they've this those through to too under until up very was wasn't we we'd we'll we're we've were weren't what what's
when when's where where's which while who who's whom why why's with won't would wouldn't you you'd you'll you're
you've your yours yourself yourselves""".split())

WORD = re.compile(r"[a-z0-9]+")


def words(s):
    return WORD.findall(s.lower())


def norm(s):
    return " ".join(s.lower().split())


def load_tiktoken(cache_dir):
    src = os.path.join(ROOT, "Sources", "Tokenizer", "Resources", "o200k_base.tiktoken")
    shutil.copyfile(src, os.path.join(cache_dir, hashlib.sha1((URL % "o200k_base").encode()).hexdigest()))
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    import tiktoken
    return tiktoken.get_encoding("o200k_base")


class BM25:
    def __init__(self, docs, k1=1.2, b=0.75):
        self.k1, self.b = k1, b
        self.tf = []
        self.df = {}
        for d in docs:
            counts = {}
            for w in words(d):
                if w in STOP:
                    continue
                counts[w] = counts.get(w, 0) + 1
            self.tf.append(counts)
            for w in counts:
                self.df[w] = self.df.get(w, 0) + 1
        self.n = len(docs)
        self.lens = [sum(c.values()) for c in self.tf]
        self.avg = (sum(self.lens) / self.n) if self.n else 1.0
        self.postings = {}
        for i, c in enumerate(self.tf):
            for w in c:
                self.postings.setdefault(w, []).append(i)

    def idf(self, w):
        df = self.df.get(w, 0)
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query):
        out = {}
        for w in set(x for x in words(query) if x not in STOP):
            idf = self.idf(w)
            for i in self.postings.get(w, ()):
                f = self.tf[i][w]
                out[i] = out.get(i, 0.0) + idf * f * (self.k1 + 1) / (
                    f + self.k1 * (1 - self.b + self.b * self.lens[i] / self.avg))
        return out


def load_rows(path, split):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.readlines()
    sel = lines[:1600] if split == "dev" else lines[1600:]
    rows = []
    for line in sel:
        r = json.loads(line)
        ctx = r["ctxs"][0]
        rows.append({"question": r["question"], "answers": r["answers"], "title": ctx["title"], "text": ctx["text"]})
    return rows


def build_contexts(rows, seed, ndocs=20):
    passages = ["%s %s" % (r["title"], r["text"]) for r in rows]
    index = BM25(passages)
    rng = random.Random(seed)
    out = []
    for i, r in enumerate(rows):
        answers = [norm(a) for a in r["answers"] if norm(a)]
        ranked = sorted(index.scores(r["question"]).items(), key=lambda kv: -kv[1])
        distractors = []
        for j, _ in ranked:
            if j == i:
                continue
            if any(a in norm(passages[j]) for a in answers):
                continue
            distractors.append(j)
            if len(distractors) == ndocs - 1:
                break
        k = len(distractors)
        tries = 0
        while len(distractors) < ndocs - 1 and tries < 100_000:  # too few BM25 hits: seeded random passages
            tries += 1
            j = rng.randrange(len(rows))
            if j != i and j not in distractors and not any(a in norm(passages[j]) for a in answers):
                distractors.append(j)
        pos = rng.randrange(ndocs)
        docs = [(rows[j]["title"], rows[j]["text"]) for j in distractors]
        docs.insert(pos, (r["title"], r["text"]))
        context = "\n".join("Document [%d](Title: %s) %s" % (n + 1, t, x) for n, (t, x) in enumerate(docs))
        out.append({"question": r["question"], "answers": r["answers"], "context": context, "gold": pos,
                    "bm25_distractors": k})
    return out


# ---- baselines ---------------------------------------------------------------------------------------------------

def truncate(enc, text, question, ratio, rng):
    ids = enc.encode_ordinary(text)
    return enc.decode(ids[: int(len(ids) * ratio)])


def random_drop(enc, text, question, ratio, rng):
    ids = enc.encode_ordinary(text)
    keep = sorted(rng.sample(range(len(ids)), int(len(ids) * ratio)))
    return enc.decode([ids[i] for i in keep])


def stopword_removal(enc, text, question, ratio, rng):
    return re.sub(r"\s+", " ", " ".join(w for w in text.split(" ") if w.lower().strip(".,;:!?\"'()") not in STOP))


def bm25_passages(enc, text, question, ratio, rng):
    docs = text.split("\n")
    budget = int(len(enc.encode_ordinary(text)) * ratio)
    costs = [len(enc.encode_ordinary(d)) + 1 for d in docs]
    if question:
        s = BM25(docs).scores(question)
        order = sorted(range(len(docs)), key=lambda i: (-s.get(i, 0.0), i))
    else:
        order = list(range(len(docs)))
    keep, used = set(), 0
    for i in order:
        if used + costs[i] <= budget:
            keep.add(i)
            used += costs[i]
    return "\n".join(docs[i] for i in sorted(keep))


BASELINES = [("truncation", truncate), ("random drop", random_drop), ("stop-word removal", stopword_removal),
             ("BM25 passages", bm25_passages)]


# ---- the sidecar's compressor -------------------------------------------------------------------------------------

def lossless_check(cli, rows, seed):
    """Lossless profile on JSON tool results (pretty-printed, and fenced inside prose): values must be identical."""
    rng = random.Random(seed)
    cases = []
    for i, r in enumerate(rows[:400]):
        results = [{"rank": k + 1, "title": rows[(i + k) % len(rows)]["title"],
                    "score": round(rng.random(), 4), "tiny": 1e-5 * (k + 1), "id": 10**18 + k,
                    "text": rows[(i + k) % len(rows)]["text"][:300]} for k in range(5)]
        doc = {"query": r["question"], "results": results, "meta": {"ok": True, "next": None}}
        if i % 2 == 0:
            cases.append(("whole", json.dumps(doc, indent=2, ensure_ascii=False)))
        else:
            cases.append(("fenced", "The search tool returned:\n\n\n```json\n%s\n```\n\nUse   it   to answer.   " %
                          json.dumps(doc, indent=4, ensure_ascii=False)))
    lines = "\n".join(json.dumps({"prompt": t}) for _, t in cases) + "\n"
    p = subprocess.run([cli, "compress", "--jsonl", "--profile", "lossless"], input=lines.encode(),
                       capture_output=True, check=True)
    outs = [json.loads(x) for x in p.stdout.decode().splitlines()]
    same = 0
    orig = comp = 0
    for (kind, text), o in zip(cases, outs):
        c = o["compressed"]
        orig += o["original_tokens"]
        comp += o["compressed_tokens"]
        if kind == "whole":
            ok = json.loads(c) == json.loads(text)
        else:
            a = text.split("```json\n", 1)[1].split("\n```", 1)[0]
            b = c.split("```json\n", 1)[1].split("\n```", 1)[0]
            ok = json.loads(a) == json.loads(b)
        same += ok
    return {"cases": len(cases), "identical": same, "achieved": comp / orig}


def run_cli(cli, items, ratio, with_question, profile=None):
    lines = []
    for it in items:
        d = {"prompt": it["context"]}
        if with_question:
            d["question"] = it["question"]
        lines.append(json.dumps(d))
    data = ("\n".join(lines) + "\n").encode()
    cmd = [cli, "compress", "--jsonl", "--timing", "--ratio", str(ratio)]
    if profile:
        cmd += ["--profile", profile]
    # warm-up pass (page cache, lexicon load, branch predictors), then the measured pass
    subprocess.run(cmd, input=("\n".join(lines[:50]) + "\n").encode(), capture_output=True, check=True)
    p = subprocess.run(cmd, input=data, capture_output=True, check=True)
    out = [json.loads(x) for x in p.stdout.decode().splitlines() if x.strip()]
    if len(out) != len(items):
        sys.exit("compress returned %d lines for %d prompts: %s" % (len(out), len(items), p.stderr.decode()[-2000:]))
    return out


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(math.ceil(q * len(xs))) - 1))
    return xs[k]


def evaluate(enc, items, outputs, orig_tokens):
    kept = present = 0
    comp_tokens = 0
    for it, text, n in zip(items, outputs, orig_tokens):
        answers = [norm(a) for a in it["answers"] if norm(a)]
        ctx = norm(it["context"])
        if not any(a in ctx for a in answers):
            continue
        present += 1
        t = norm(text)
        if any(a in t for a in answers):
            kept += 1
    comp_tokens = sum(len(enc.encode_ordinary(t)) for t in outputs)
    return kept, present, comp_tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cli")
    ap.add_argument("--qa", default=os.path.join(ROOT, "fixtures", "qa", "nq-open-oracle.jsonl.gz"))
    ap.add_argument("--split", default="dev", choices=["dev", "heldout"])
    ap.add_argument("--ratios", default="0.5,0.25")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the ~4k-token speed set")
    ap.add_argument("--passes", type=int, default=3, help="passes over the speed set (per prompt, the fastest)")
    ap.add_argument("--out")
    ap.add_argument("--json")
    args = ap.parse_args()

    cache = tempfile.mkdtemp(prefix="tiktoken-")
    enc = load_tiktoken(cache)
    rows = load_rows(args.qa, args.split)
    t0 = time.time()
    items = build_contexts(rows, args.seed)
    if args.limit:
        items = items[: args.limit]
    print("built %d contexts in %.1f s" % (len(items), time.time() - t0), file=sys.stderr)
    orig = [len(enc.encode_ordinary(it["context"])) for it in items]
    total_orig = sum(orig)
    ratios = [float(r) for r in args.ratios.split(",")]
    results = []

    def record(name, question, ratio, outputs, micros):
        kept, present, comp = evaluate(enc, items, outputs, orig)
        per1k = [m / (n / 1000.0) for m, n in zip(micros, orig)] if micros else []
        row = {"compressor": name, "question": question, "target": ratio, "achieved": comp / total_orig,
               "kept": kept, "present": present, "retention": kept / present if present else float("nan"),
               "us_per_1k_p50": pct(per1k, 0.5) if per1k else None, "us_per_1k_p99": pct(per1k, 0.99) if per1k else None}
        results.append(row)
        print("%-22s q=%-5s target %.2f achieved %.3f retention %.4f (%d/%d) p50 %s us/1k" % (
            name, question, ratio, row["achieved"], row["retention"], kept, present,
            "%.1f" % row["us_per_1k_p50"] if per1k else "-"), file=sys.stderr)

    record("original", True, 1.0, [it["context"] for it in items], None)
    for ratio in ([] if args.speed_only else ratios):
        for question in (True, False):
            out = run_cli(args.cli, items, ratio, question)
            record("auto-optimizer", question, ratio, [o["compressed"] for o in out], [o["micros"] for o in out])
            if args.skip_baselines:
                continue
            for name, fn in BASELINES:
                if name == "stop-word removal" and ratio != ratios[0]:
                    continue
                rng = random.Random(args.seed)
                outs, micros = [], []
                for it in items:
                    t = time.perf_counter()
                    outs.append(fn(enc, it["context"], it["question"] if question else None, ratio, rng))
                    micros.append((time.perf_counter() - t) * 1e6)
                record(name, question, ratio if name != "stop-word removal" else float("nan"), outs, micros)

    # speed set: ~4k-token prompts (30 documents), with question, ratio 0.5
    speed_rows = build_contexts(rows[:400], args.seed + 1, ndocs=30)
    speed_orig = [len(enc.encode_ordinary(it["context"])) for it in speed_rows]
    speed = {}
    for ratio in ratios:
        best = None
        for _ in range(args.passes):  # per prompt, the fastest pass (other processes only ever add time)
            out = run_cli(args.cli, speed_rows, ratio, True)
            cur = [(o["micros"], o["cpu_micros"]) for o in out]
            best = cur if best is None else [(min(a[0], b[0]), min(a[1], b[1])) for a, b in zip(best, cur)]
        per1k = [w / (n / 1000.0) for (w, _), n in zip(best, speed_orig)]
        cpu1k = [c / (n / 1000.0) for (_, c), n in zip(best, speed_orig)]
        speed[ratio] = {"prompts": len(speed_rows), "tokens_mean": statistics.mean(speed_orig),
                        "p50": pct(per1k, 0.5), "p99": pct(per1k, 0.99), "max": max(per1k),
                        "cpu_p50": pct(cpu1k, 0.5), "cpu_p99": pct(cpu1k, 0.99)}
        print("speed ratio %.2f: %d prompts, mean %.0f tokens, per 1k tokens p50 %.1f us p99 %.1f us (cpu p50 %.1f p99 %.1f)" % (
            ratio, len(speed_rows), speed[ratio]["tokens_mean"], speed[ratio]["p50"], speed[ratio]["p99"],
            speed[ratio]["cpu_p50"], speed[ratio]["cpu_p99"]), file=sys.stderr)

    lossless = lossless_check(args.cli, rows, args.seed)
    print("lossless: %d/%d JSON values identical, achieved keep %.3f" % (
        lossless["identical"], lossless["cases"], lossless["achieved"]), file=sys.stderr)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"split": args.split, "seed": args.seed, "prompts": len(items), "tokens_total": total_orig,
                       "results": results, "speed": {str(k): v for k, v in speed.items()},
                       "lossless": lossless}, f, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report(args, items, total_orig, results, speed, lossless))
    shutil.rmtree(cache, ignore_errors=True)


def report(args, items, total_orig, results, speed, lossless):
    lines = ["| compressor | question | target keep | achieved keep | answers kept | us per 1k tokens (p50 / p99) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lat = "-" if r["us_per_1k_p50"] is None else "%.1f / %.1f" % (r["us_per_1k_p50"], r["us_per_1k_p99"])
        tgt = "-" if r["target"] != r["target"] else "%.2f" % r["target"]
        lines.append("| %s | %s | %s | %.3f (%.1fx) | %.1f%% (%d/%d) | %s |" % (
            r["compressor"], "yes" if r["question"] else "no", tgt, r["achieved"], 1 / r["achieved"] if r["achieved"] else 0,
            100 * r["retention"], r["kept"], r["present"], lat))
    sp = ["| target keep | prompts | mean tokens | p50 us/1k | p99 us/1k | max us/1k | CPU p50 us/1k | CPU p99 us/1k |",
          "|---|---|---|---|---|---|---|---|"]
    for k, v in speed.items():
        sp.append("| %.2f | %d | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f |" % (
            k, v["prompts"], v["tokens_mean"], v["p50"], v["p99"], v["max"], v["cpu_p50"], v["cpu_p99"]))
    return "\n".join([
        "# Prompt compression quality (%s split, %d prompts, %d o200k tokens, seed %d)" % (
            args.split, len(items), total_orig, args.seed), "",
        "Command: `python Benchmarks/compression_quality.py .build/release/auto-optimizer --split %s --out ...`" % args.split,
        "", *lines, "", "## Speed on ~4k-token prompts (30 documents, with question), release build, in-process timing", "",
        *sp, "", "## Lossless steps on JSON tool results (400 prompts: pretty-printed JSON, and JSON fenced in prose)", "",
        "JSON values identical after compression: %d/%d (%.1f%%); achieved keep %.3f (%.2fx)." % (
            lossless["identical"], lossless["cases"], 100.0 * lossless["identical"] / lossless["cases"],
            lossless["achieved"], 1 / lossless["achieved"]), ""])


if __name__ == "__main__":
    main()
