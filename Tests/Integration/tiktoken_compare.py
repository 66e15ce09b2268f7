#!/usr/bin/env python3
"""Byte-exact comparison of the Swift tokenizer against the real tiktoken (stdlib + tiktoken only).

    python tiktoken_compare.py CLI RESOURCE_DIR [--encoding NAME ...] [--show N] [--random N] [--seed S]

CLI is a binary with the `tokens` subcommand (auto-optimizer, or tok-cli in the standalone package);
RESOURCE_DIR holds the repo's o200k_base.tiktoken / cl100k_base.tiktoken. tiktoken runs offline on those very
files: they are copied into a private cache directory under the names tiktoken looks for (sha1 of the download
URL) and TIKTOKEN_CACHE_DIR points there; tiktoken checks their SHA-256 itself.

A varied corpus (many scripts, emoji sequences, combining marks, code, whitespace runs, numbers, contractions,
long repeats, seeded random Unicode) is sent to the CLI once per encoding as JSON lines
(`tokens --encoding NAME --jsonl --ids`), and every string's ids are compared with tiktoken's
`encode_ordinary`. Prints a summary; exits 1 on any mismatch (showing the first ones), 2 on a usage or CLI error.
"""
import argparse
import hashlib
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ENCODINGS = ("o200k_base", "cl100k_base")
URL = "https://openaipublic.blob.core.windows.net/encodings/%s.tiktoken"


def load_tiktoken(resource_dir, cache_dir):
    for name in ENCODINGS:
        src = os.path.join(resource_dir, name + ".tiktoken")
        if not os.path.exists(src):
            sys.exit("error: %s not found" % src)
        dst = os.path.join(cache_dir, hashlib.sha1((URL % name).encode()).hexdigest())
        shutil.copyfile(src, dst)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    import tiktoken  # noqa: E402 (must follow TIKTOKEN_CACHE_DIR)

    return tiktoken


# ---------------------------------------------------------------------------------------------------------------
# Corpus

SCRIPTS = [
    # Latin with accents (precomposed and decomposed)
    "Ça va? Élève, naïve café, Ångström, São Paulo, Dvořák, Łódź, Kraków, Straße, ĳssel, œuvre.",
    "Cafe\u0301 nai\u0308ve A\u030Angstro\u0308m — decomposed forms; ǅemal Ǆ ǆ ǈ ǋ titlecase digraphs.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! McDonald's iPhone eBay HTTPServer XMLHttpRequest",
    # Cyrillic, Greek
    "Съешь же ещё этих мягких французских булок, да выпей чаю. ПРИВЕТ, Мир! Ёлка ёж.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. ΑΒΓΔ αβγδ ς Σ ΐ ΰ — Ἀθῆναι ᾧ ᾯ",
    # Arabic, Hebrew (RTL, harakat), Persian digits
    "اللغة العربية جميلة. مَرْحَبًا بِالْعَالَمِ! ٠١٢٣٤٥٦٧٨٩ ۰۱۲۳ ﷺ ﻻ",
    "שָׁלוֹם עוֹלָם! עברית בלי ניקוד, ו־מקף. ״ציטוט״ ׳",
    # Indic, Thai, Southeast Asian
    "हिन्दी भाषा सुंदर है। क्षत्रिय ज्ञान श्री ॐ १२३४५ नमस्ते",
    "বাংলা ভাষা। தமிழ் மொழி. తెలుగు ಕನ್ನಡ മലയാളം ગુજરાતી ਪੰਜਾਬੀ ଓଡ଼ିଆ සිංහල",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ สวัสดีครับ ๑๒๓ ພາສາລາວ ភាសាខ្មែរ မြန်မာဘာသာ",
    # CJK, Korean, Japanese
    "中文没有空格。我爱北京天安门！繁體中文：臺灣。𠀀𠀁𪚥 (CJK Ext B)",
    "日本語のテキスト：ひらがな、カタカナ、漢字。ｶﾀｶﾅ半角　全角スペース　ー〜",
    "한국어 텍스트입니다. 안녕하세요! 한글 자모 ᄀᄁ ㄱㄴㄷ 가각",
    # Others
    "Ethiopic ሰላም ዓለም; Georgian ქართული; Armenian Հայերեն; Tibetan བོད་ཡིག; Mongolian ᠮᠣᠩᠭᠣᠯ",
    "Cherokee ᏣᎳᎩ; Canadian syllabics ᐃᓄᒃᑎᑐᑦ; Runic ᚠᚢᚦ; Ogham ᚁᚂ; Gothic 𐌰𐌱𐌲; Linear B 𐀀𐀁",
    "Math: ∀x∈ℝ, x²≥0; ∑ᵢ aᵢ = ½; √2 ≈ 1.414; ∞ ≠ ℵ₀; 𝔸𝕓𝒸 𝐀𝐁𝐂 ⅓ ⅔ Ⅻ ⅻ ① ⑳",
    "Symbols: © ® ™ § ¶ † ‡ • … ‰ € £ ¥ ₹ ₿ ← → ↔ ⇒ ★ ☆ ♠ ♥ ✓ ✗ «quotes» „Anführung“ ‘single’",
]

EMOJI = [
    "👋🌍 Hello 😀😃😄 😂🤣 ❤️ 💯 🔥",
    "Family: 👨‍👩‍👧‍👦 👩‍👩‍👦 🧑‍🤝‍🧑 👨🏽‍💻 👩🏿‍🚀 🏳️‍🌈 🏴‍☠️ 😶‍🌫️",
    "Skin tones: 👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 ✋🏽 🤙🏾",
    "Flags: 🇺🇸 🇬🇧 🇫🇷 🇩🇪 🇯🇵 🇨🇳 🇮🇳 🇧🇷 🏴󠁧󠁢󠁳󠁣󠁴󠁿 🇪🇺",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ 🔟; variation: ☺︎ ☺️ ✈️ ✈︎",
    "emoji🙂inside🙂words🙂and🙂numbers123🙂456",
    "🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂 🎉🎉🎉 !!! ???",
]

MARKS = [
    "\u0301abc",  # mark at start
    "\u0301ABC ",
    "\u0301\u0302\u0303",
    "a\u0301\u0302\u0303b",
    "A\u0301BC\u0301d",
    "1\u0301 2\u0301x",
    " \u0301x",
    " \u0301X",
    "x \u0301",
    "Z̵̡̢̧̛̛̖̗̘̙̜̝̞̟̠̣̤̥̦̩̪̫̬̭̮̯̰̱̲̳̹̺̻̼͇͈͉͍͎̀́̂̃̄̅̆̇̈̉̊̋̌̍̎̏̐̑̒̓̔̽̾̿̀́͂̓̈́͆͊͋͌̕̚ͅa̷l̸g̴o̶ zalgo",
    "ÅÅ", "ÉCOLE\u0301", "ʰʲʷ ʰello Helloʰ HELLOʰ ʰHELLO",
    "ªº ª1 ªA Aª aª",
    "ǅungla ǅUNGLA Ǆungla",
    "ﬁ ﬂ ﬀ", "ᾈᾉ ᾀ", "İstanbul ı i̇",
    "\u0903\u0915\u093f \u0915\u093f\u0903",  # Devanagari spacing marks
    "\u20dd\u20de\u20e3 enclosing marks a\u20dd",
]

CODE = [
    'def parse(path: str) -> dict[str, int]:\n    """Parse a file."""\n    with open(path) as f:\n        return {k: int(v) for k, v in (line.split("=") for line in f)}\n',
    "func fibonacci(_ n: Int) -> Int {\n\tguard n > 1 else { return n }\n\treturn fibonacci(n - 1) + fibonacci(n - 2)\n}\n",
    "const x = arr.map((v, i) => v * i).filter(Boolean);\nconsole.log(`total: ${x.length}`); // done\n",
    "fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let v: Vec<u8> = vec![0xFF; 16];\n    println!(\"{:?}\", &v[..4]);\n    Ok(())\n}\n",
    "#include <stdio.h>\nint main(int argc, char **argv) {\n  for (int i = 0; i < argc; ++i) printf(\"%s\\n\", argv[i]);\n  return 0;\n}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tch := make(chan int, 10)\n\tgo func() { ch <- 42 }()\n\tfmt.Println(<-ch)\n}\n",
    "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id WHERE o.created_at >= '2024-01-01' GROUP BY u.id HAVING n > 3;",
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Test &amp; more</title></head>\r\n<body><p class='x'>Hi</p></body></html>\r\n",
    '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi!\\nHow are you?"}], "temperature": 0.7, "max_tokens": 1024}',
    "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> /tmp/out.log 2>&1\ndone\n",
    "    indented\n        more indented\n\t\ttabs\n  \n\n\n    trailing spaces    \n",
    "a//b///c /// d\n//\n/\n/* comment */ x /= 2; url = 'https://example.com/a/b?c=d&e=f#g'\n",
    "matrix = [[1, 2, 3],\r\n          [4, 5, 6]]\r\n\r\n\r\nprint(matrix[0][-1])\r\n",
]

WS_ATOMS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00a0", "\u3000", "\u2028", "\u2029", "\x0b", "\x0c",
            "\x85", "\u1680", "\u2003", "\u202f", "\u205f", "\u200b", "\u180e", "\x1c", "\ufeff", ""]
NEIGHBOURS = ["a", "A", "1", "!", "'", "é", "中", "\u0301", "😀", "/", "", "ab", "'s", "-"]


def whitespace_cases():
    out = []
    for left in NEIGHBOURS:
        for w1 in WS_ATOMS:
            for w2 in (" ", "\n", "\t", "\u00a0", ""):
                for right in NEIGHBOURS:
                    out.append(left + w1 + w2 + right)
    return out


def number_cases():
    rng = random.Random(7)
    out = []
    for n in range(1, 41):
        digits = "".join(rng.choice("0123456789") for _ in range(n))
        out += [digits, "x" + digits, " " + digits + " ", "$" + digits + ".99", digits + "th", "-" + digits]
    out += ["1,234,567.89", "3.14159265358979", "1e-10", "0x1F", "2024-01-31T12:34:56Z", "+1 (555) 123-4567",
            "١٢٣٤٥٦٧٨٩٠", "१२३४५६७८९०", "１２３４５", "²³¹⁴", "½¼¾⅓", "ⅠⅡⅢⅣⅫ", "𝟘𝟙𝟚𝟛", "1²3", "12ab34", "a1b2c3",
            "100%", "v1.2.3-rc.4", "192.168.0.1", "٣.١٤", "1 000 000", "1\u00a0000"]
    return out


def contraction_cases():
    out = []
    bases = ["don", "DON", "Don", "it", "IT", "we", "WE", "x", "X", "", " ", "1", "é", "中", "ǅ", "ʰ", "\u0301", "!"]
    suffixes = ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'rE", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'lL",
                "'d", "'D", "'ſ", "'x", "'", "''", "'sa", "'lla", "'red", "’s"]
    for b in bases:
        for s in suffixes:
            out.append(b + s)
            out.append(b + s + " next")
            out.append(b + s + "ing")
    out += ["I'm sure you'd've known they'll say it's John's.", "I'M SURE YOU'D'VE KNOWN THEY'LL SAY IT'S JOHN'S.",
            "'s'S't'T're'RE've'm'll'd", "rock 'n' roll", "'tis 'twas", "O'Neill O'NEILL o'neill"]
    return out


def repeats():
    return ["a" * 100_000, " " * 100_000, "\n" * 50_000, "ab" * 10_000, "\r\n" * 20_000, "é" * 30_000,
            "🙂" * 10_000, "1" * 20_000, "!" * 10_000, " a" * 20_000, "\t" * 10_000, "中" * 20_000,
            "A" * 50_000, "aA" * 10_000, "\u0301" * 5_000, ". " * 20_000, " \n" * 10_000, "x" * 1000 + " " * 1000 + "y"]


# A small alphabet of characters that sit on the pattern's class boundaries: letters of each case class,
# marks, digits of several kinds, apostrophes, slash, whitespace of several kinds, symbols, emoji.
TRICKY = ["a", "b", "s", "t", "l", "e", "A", "S", "L", "ǅ", "ʰ", "ª", "中", "é", "\u0301", "\u0903", "1", "²", "Ⅻ",
          "'", "’", "/", ".", "!", "-", "_", " ", " ", " ", "\n", "\r", "\t", "\u00a0", "\u3000", "\x0b", "\x85",
          "😀", "👍🏽", "\u200d", "ſ", "$", "<", "\\"]


def random_strings(count, seed):
    rng = random.Random(seed)
    out = []

    def random_scalar(plane_weights):
        while True:
            plane = rng.choices(range(len(plane_weights)), plane_weights)[0]
            if plane == 0:
                cp = rng.randrange(0x20, 0x80)
            elif plane == 1:
                cp = rng.randrange(0x80, 0x800)
            elif plane == 2:
                cp = rng.randrange(0x800, 0x10000)
            elif plane == 3:
                cp = rng.randrange(0x10000, 0x30000)
            else:
                cp = rng.randrange(0x30000, 0x110000)
            if 0xD800 <= cp <= 0xDFFF:
                continue  # surrogates cannot be in a str that tiktoken or Swift accept
            return chr(cp)

    for i in range(count):
        kind = i % 4
        n = rng.randrange(1, 40)
        if kind == 0:  # the tricky alphabet
            out.append("".join(rng.choice(TRICKY) for _ in range(n)))
        elif kind == 1:  # mostly ASCII with some Unicode
            out.append("".join(random_scalar([70, 15, 12, 2, 1]) for _ in range(n)))
        elif kind == 2:  # anywhere (excluding surrogates)
            out.append("".join(random_scalar([10, 20, 40, 20, 10]) for _ in range(n)))
        else:  # tricky characters mixed with random ones
            out.append("".join(rng.choice(TRICKY) if rng.random() < 0.6 else random_scalar([20, 30, 40, 10, 0])
                               for _ in range(n)))
    return out


def real_text():
    """Longer natural text and code: docstrings and sources of a few stdlib modules (deterministic per
    Python version)."""
    out = []
    for module in (json, random, argparse, subprocess):
        source = inspect.getsource(module)
        for start in range(0, min(len(source), 60_000), 6_000):
            out.append(source[start:start + 6_000])
    return out


# Pieces the o200k scanner's ASCII fast path takes or must hand back (prefix byte, one capital, lowercase run, then
# its end: ASCII punctuation, a capital, an apostrophe, a non-ASCII letter or mark, the end of the text).
WORDISH = ["a", "b", "xyz", "the", "A", "B", "The", "ABC", " ", "\t", "\n", "\r", ",", ".", '"', "(", "-", "'", "'s",
           "'ll", "'RE", "0", "12", "é", "É", "ß", "ſ", "\u0301", "\u00a0", "’", "McD", " the", " The", "中"]


def lowercase_run_cases():
    """Lowercase runs of every length from 1 to 24 (the fast path reads them eight bytes at a time) between each
    prefix and each kind of end, at every offset from the start of the text."""
    letters = "abcdefghijklmnopqrstuvwxyzqwertyuiop"
    out = []
    for length in range(1, 25):
        for prefix in ["", " ", "A", " A", "(", "x1 "]:
            for end in ["", ",", "A", "'s", "'T", "é", "\u0301", "1", " ", "\n", "\u00a0", "z\u00e9", " next", "{", "`", "@", "[", "\x7f"]:
                out.append(prefix + letters[:length] + end)
    return out


def wordish_strings(count, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDISH) for _ in range(rng.randint(1, 16))) for _ in range(count)]


def build_corpus(random_count=4000, seed=20241125):
    corpus = []
    corpus += SCRIPTS + EMOJI + MARKS + CODE
    corpus += [" ".join(SCRIPTS), "\n".join(CODE), "\r\n".join(EMOJI)]
    corpus += whitespace_cases()
    corpus += number_cases()
    corpus += contraction_cases()
    corpus += repeats()
    corpus += random_strings(random_count, seed=seed)
    corpus += wordish_strings(random_count, seed=seed + 1)
    corpus += lowercase_run_cases()
    corpus += real_text()
    # Assigned in Unicode 17 (newer than tiktoken's Unicode 16 tables): unassigned, i.e. punctuation, for tiktoken.
    corpus += ["\U00032a7a:E", "\ua7d4>d&", "\U00016ec6/e", "$\u088fl", "_\U0001e6d0t", "x\u1ad2_i", "\U00010959\"T"]
    corpus += ["", "<|endoftext|>", "a<|endoftext|>b <|fim_prefix|><|endofprompt|>", "\x00\x01\x02\x7f", "\ufffd"]
    return corpus


# ---------------------------------------------------------------------------------------------------------------


def run_cli(cli, encoding, corpus, what="ids"):
    payload = "".join(json.dumps({"text": s}) + "\n" for s in corpus).encode()
    started = time.perf_counter()
    proc = subprocess.run([cli, "tokens", "--encoding", encoding, "--jsonl", "--" + what, "-"], input=payload,
                          capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        sys.exit("error: %s exited with %d" % (cli, proc.returncode))
    lines = proc.stdout.decode().splitlines()
    # The CLI skips blank input lines only; every corpus line is a JSON object, so counts must agree.
    if len(lines) != len(corpus):
        sys.exit("error: %d output lines for %d inputs" % (len(lines), len(corpus)))
    return [json.loads(line)[what] for line in lines], elapsed


def regex_pieces(enc, corpus):
    """The pre-tokenizer pieces (UTF-8 byte lengths) of every corpus string whose characters are all assigned in
    this Python's Unicode tables, by the encoding's own pattern and the `regex` module (tiktoken's dependency): the
    boundaries ids cannot show (byte-pair merges rarely cross a piece boundary, so a misplaced one often yields the
    same ids). Strings with characters unassigned here are left out: the `regex` module and tiktoken may disagree
    about their classes."""
    import regex
    import unicodedata
    pattern = regex.compile(enc._pat_str)
    out = {}
    for i, s in enumerate(corpus):
        if all(unicodedata.category(c) != "Cn" for c in s):
            out[i] = [len(p.encode()) for p in pattern.findall(s)]
    return out


def short(s, limit=120):
    r = repr(s)
    return r if len(r) <= limit else r[:limit] + "...(%d chars)" % len(s)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cli")
    parser.add_argument("resource_dir")
    parser.add_argument("--encoding", action="append", choices=ENCODINGS)
    parser.add_argument("--show", type=int, default=5, help="mismatches to show per encoding")
    parser.add_argument("--random", type=int, default=4000, help="seeded random strings to add (default 4000)")
    parser.add_argument("--seed", type=int, default=20241125)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        tiktoken = load_tiktoken(args.resource_dir, cache)
        corpus = build_corpus(args.random, args.seed)
        total_chars = sum(len(s) for s in corpus)
        total_bytes = sum(len(s.encode()) for s in corpus)
        print("corpus: %d strings, %d characters, %d UTF-8 bytes" % (len(corpus), total_chars, total_bytes))
        failed = False
        for name in args.encoding or ENCODINGS:
            enc = tiktoken.get_encoding(name)
            started = time.perf_counter()
            expected = [enc.encode_ordinary(s) for s in corpus]
            ref_elapsed = time.perf_counter() - started
            actual, cli_elapsed = run_cli(args.cli, name, corpus)
            mismatches = [i for i, (e, a) in enumerate(zip(expected, actual)) if e != a]
            tokens = sum(len(e) for e in expected)
            print("%s: %d strings, %d tokens, %d mismatches (tiktoken %.2fs in-process; CLI %.2fs incl. start and JSON)"
                  % (name, len(corpus), tokens, len(mismatches), ref_elapsed, cli_elapsed))
            for i in mismatches[: args.show]:
                e, a = expected[i], actual[i]
                k = next((j for j in range(min(len(e), len(a))) if e[j] != a[j]), min(len(e), len(a)))
                print("  #%d %s" % (i, short(corpus[i])))
                print("     first difference at token %d: tiktoken %s vs ours %s" % (
                    k, [enc.decode_single_token_bytes(t) for t in e[k:k + 4]],
                    [enc.decode_single_token_bytes(t) if t < enc.n_vocab else t for t in a[k:k + 4]]))
            failed = failed or bool(mismatches)
            # The pieces themselves, against the pattern.
            expected_pieces = regex_pieces(enc, corpus)
            pieces, _ = run_cli(args.cli, name, corpus, what="pieces")
            bad = [i for i, e in expected_pieces.items() if pieces[i] != e]
            print("%s: pieces of %d strings, %d mismatches" % (name, len(expected_pieces), len(bad)))
            for i in bad[: args.show]:
                print("  #%d %s: pattern %s vs ours %s" % (i, short(corpus[i]), expected_pieces[i][:12], pieces[i][:12]))
            failed = failed or bool(bad)
        print("RESULT: %s" % ("MISMATCH" if failed else "all ids and pieces identical"))
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
