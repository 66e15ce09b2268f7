#!/usr/bin/env python3
"""Token counting throughput: the Swift tokenizer (tokbench) vs tiktoken's encode_ordinary, same texts, same run.

    python Benchmarks/tokenizer_vs_tiktoken.py TOKBENCH RESOURCE_DIR [--english NQ_JSONL_GZ] [--rounds N] [--json FILE]

TOKBENCH is the release build of the `tokbench` executable (`swift build -c release --product tokbench`);
RESOURCE_DIR holds the shipped o200k_base.tiktoken / cl100k_base.tiktoken (tiktoken runs offline on them).
Texts (~1 MB each, UTF-8): a realistic mix of English prose (Wikipedia passages from the NQ-open oracle file in
shared/data/qa, when found; else stdlib docstrings) and code (Python stdlib sources), interleaved in ~2 KB
chunks, half and half; and 1 MB of one repeated character ('a', ' ', '\\n'). Both sides are single-threaded,
report the best of N rounds, and count MB as 10^6 bytes of UTF-8.
"""
import argparse
import gzip
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ENCODINGS = ("o200k_base", "cl100k_base")
URL = "https://openaipublic.blob.core.windows.net/encodings/%s.tiktoken"
SIZE = 1_000_000


def english_chunks(path):
    chunks = []
    if path and os.path.exists(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                for ctx in json.loads(line).get("ctxs", [])[:1]:
                    chunks.append(ctx["title"] + "\n" + ctx["text"] + "\n\n")
    else:
        import collections, email, http.client, logging, pathlib  # noqa: E401 (docstrings as prose)
        for module in (collections, email, http.client, logging, pathlib, argparse, json):
            for _, obj in inspect.getmembers(module):
                doc = inspect.getdoc(obj)
                if doc and len(doc) > 200:
                    chunks.append(doc + "\n\n")
    return chunks


def code_chunks():
    import asyncio, dataclasses, decimal, difflib, textwrap, typing  # noqa: E401
    chunks = []
    for module in (typing, dataclasses, difflib, textwrap, decimal, asyncio.base_events, json.decoder, argparse):
        source = inspect.getsource(module)
        chunks += [source[i:i + 2000] for i in range(0, len(source), 2000)]
    return chunks


def mixed_text(english_path):
    english, code = english_chunks(english_path), code_chunks()
    out, size, i = [], 0, 0
    while size < SIZE:
        for part in (english[i % len(english)], code[i % len(code)]):
            out.append(part)
            size += len(part.encode())
        i += 1
    return "".join(out).encode()[:SIZE].decode(errors="ignore")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_english = os.path.join(here, "..", "..", "shared", "data", "qa", "nq-open-oracle.jsonl.gz")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokbench")
    parser.add_argument("resource_dir")
    parser.add_argument("--english", default=default_english)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the rows as JSON (for Benchmarks/suite_report.py)")
    args = parser.parse_args()
    rows_out = []

    texts = [("mixed English+code", mixed_text(args.english)), ("1 MB of 'a'", "a" * SIZE),
             ("1 MB of ' '", " " * SIZE), ("1 MB of '\\n'", "\n" * SIZE)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (_, text) in enumerate(texts):
            paths.append(os.path.join(tmp, "text%d.txt" % i))
            with open(paths[-1], "w", encoding="utf-8", newline="") as f:
                f.write(text)
        os.makedirs(os.path.join(tmp, "cache"))
        for name in ENCODINGS:
            shutil.copyfile(os.path.join(args.resource_dir, name + ".tiktoken"),
                            os.path.join(tmp, "cache", hashlib.sha1((URL % name).encode()).hexdigest()))
        os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(tmp, "cache")
        os.environ["RAYON_NUM_THREADS"] = "1"
        import tiktoken  # noqa: E402

        print("texts: %s" % ", ".join("%s (%d bytes)" % (label, len(t.encode())) for label, t in texts))
        print("%-12s %-20s %10s %14s %14s %7s" % ("encoding", "text", "tokens", "tiktoken MB/s", "swift MB/s", "ratio"))
        ok = True
        for name in ENCODINGS:
            started = time.perf_counter()
            enc = tiktoken.get_encoding(name)
            enc.encode_ordinary("warm up")
            tiktoken_load = time.perf_counter() - started
            proc = subprocess.run([args.tokbench, "--json", "--encoding", name, "--rounds", str(args.rounds)] + paths,
                                  capture_output=True, text=True, check=True)
            rows = [json.loads(line) for line in proc.stdout.splitlines()]
            swift_load = rows[0]["load_ms"]
            for (label, text), row in zip(texts, rows[1:]):
                best, n, failure = float("inf"), None, None
                for _ in range(args.rounds):
                    t = time.perf_counter()
                    try:
                        n = len(enc.encode_ordinary(text))
                    except BaseException as error:  # tiktoken panics (fancy-regex StackOverflow) on 1 MB of spaces
                        failure = type(error).__name__ + ": " + str(error).splitlines()[0][:60]
                        break
                    best = min(best, time.perf_counter() - t)
                rows_out.append({"encoding": name, "text": label, "bytes": len(text.encode()), "tokens": row["tokens"],
                                 "swift_mb_s": row["mb_per_s"], "tiktoken_mb_s": None if failure else
                                 len(text.encode()) / 1e6 / best, "tiktoken_failure": failure,
                                 "counts_equal": None if failure else n == row["tokens"]})
                if failure:
                    print("%-12s %-20s %10d %14s %14.1f %7s  (tiktoken failed: %s)" % (
                        name, label, row["tokens"], "failed", row["mb_per_s"], "-", failure))
                    continue
                ref = len(text.encode()) / 1e6 / best
                ok = ok and n == row["tokens"]
                print("%-12s %-20s %10d %14.1f %14.1f %6.1fx%s" % (
                    name, label, n, ref, row["mb_per_s"], row["mb_per_s"] / ref,
                    "" if n == row["tokens"] else "  TOKEN COUNT DIFFERS: swift %d" % row["tokens"]))
            print("%-12s vocabulary load: tiktoken %.0f ms, swift %.0f ms (incl. SHA-256)" % (
                name, tiktoken_load * 1000, swift_load))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows_out, f, indent=1)
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
