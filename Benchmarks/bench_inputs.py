#!/usr/bin/env python3
"""Writes the request bodies and texts the benchmark suite uses, deterministically, into DIR.

    python Benchmarks/bench_inputs.py DIR

End-to-end bodies (POST /v1/chat/completions, model gpt-4o-mini):
  body-small.json / body-small-stream.json   Benchmarks/body-chat-200tok.json (~200 prompt tokens), plain / streamed
  body-large.json / body-large-stream.json   a ~8k-token retrieval prompt: system prompt, one user message with
                                             `Document [i](Title: ...)` passages from fixtures/qa (the layout of
                                             Benchmarks/compression_quality.py, dev split, seed 7), then the
                                             question as the last user turn
Micro benchmark inputs (Benchmarks/Micro):
  body-1k.json (= body-small.json), body-100k.json (a multi-turn chat of ~100 KB), rag-8k.json (= body-large.json),
  mixed.txt (the ~1 MB English + code text of Benchmarks/tokenizer_vs_tiktoken.py), sse-1mb.txt (~1 MB of
  chat.completion.chunk events as the sidecar sees them when it asked for usage: `"usage":null` on every chunk,
  a usage chunk, [DONE])
inputs.json: token counts (o200k_base, tiktoken on the shipped vocabulary) and byte sizes.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import compression_quality as cq  # noqa: E402  (context layout, fixtures loader, offline tiktoken)
import tokenizer_vs_tiktoken as tvt  # noqa: E402  (the tokenizer benchmark's mixed text)

LARGE_TOKENS = 8000
SYSTEM = ("You answer questions from the documents provided. Quote the document you rely on and say so when the "
          "documents do not contain the answer.")


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def large_body(enc):
    rows = cq.load_rows(os.path.join(ROOT, "fixtures", "qa", "nq-open-oracle.jsonl.gz"), "dev")[:300]
    item = cq.build_contexts(rows, 7, ndocs=80)[0]
    lines, tokens = [], 0
    for line in item["context"].split("\n"):  # keep whole documents up to ~8k tokens (the gold one may go)
        n = len(enc.encode_ordinary(line + "\n"))
        if tokens + n > LARGE_TOKENS - 60:
            break
        lines.append(line)
        tokens += n
    return {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
        {"role": "user", "content": item["question"] + "?"},
    ], "max_tokens": 64}


def sse_events(target_bytes=1_000_000):
    out, i = [], 0
    words = "The answer depends on the documents provided and the question asked by the user".split()
    size = 0
    while size < target_bytes:
        delta = {"content": " " + words[i % len(words)]} if i else {"role": "assistant", "content": ""}
        ev = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
              "model": "gpt-4o-mini", "system_fingerprint": "fp_bench",
              "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], "usage": None}
        line = "data: " + json.dumps(ev, separators=(",", ":")) + "\n\n"
        out.append(line)
        size += len(line)
        i += 1
    final = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], "usage": None}
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini",
             "choices": [], "usage": {"prompt_tokens": 200, "completion_tokens": i, "total_tokens": 200 + i}}
    out += ["data: " + json.dumps(e, separators=(",", ":")) + "\n\n" for e in (final, usage)] + ["data: [DONE]\n\n"]
    return "".join(out)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "Micro", ".inputs")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        enc = cq.load_tiktoken(tmp)
        with open(os.path.join(HERE, "body-chat-200tok.json"), encoding="utf-8") as f:
            small = json.load(f)
        large = large_body(enc)
        bodies = {"small": small, "large": large}
        for size, body in bodies.items():
            dump(os.path.join(out, "body-%s.json" % size), body)
            dump(os.path.join(out, "body-%s-stream.json" % size), dict(body, stream=True))
        dump(os.path.join(out, "body-1k.json"), small)
        dump(os.path.join(out, "rag-8k.json"), large)
        turns = list(small["messages"])
        while len(json.dumps(turns)) < 100_000:
            turns += [{"role": "assistant", "content": "Noted: " + m["content"]} for m in small["messages"][1:]]
            turns += small["messages"][1:]
        dump(os.path.join(out, "body-100k.json"), dict(small, messages=turns))
        with open(os.path.join(out, "mixed.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(tvt.mixed_text(os.path.join(ROOT, "fixtures", "qa", "nq-open-oracle.jsonl.gz")))
        with open(os.path.join(out, "sse-1mb.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(sse_events())
        info = {}
        for name in sorted(os.listdir(out)):
            p = os.path.join(out, name)
            if name.endswith(".json") and name != "inputs.json":
                with open(p, encoding="utf-8") as f:
                    body = json.load(f)
                info[name] = {"bytes": os.path.getsize(p), "content_tokens": sum(
                    len(enc.encode_ordinary(m["content"])) for m in body["messages"])}
            elif name.endswith(".txt"):
                info[name] = {"bytes": os.path.getsize(p)}
        with open(os.path.join(out, "mixed.txt"), encoding="utf-8") as f:
            info["mixed.txt"]["o200k_tokens"] = len(enc.encode_ordinary(f.read()))
        dump(os.path.join(out, "inputs.json"), info)
        print(json.dumps(info))


if __name__ == "__main__":
    main()
