"""A deterministic corpus of varied strings for checking ferry's WordPiece tokenizer.

corpus() returns the same >= 2,000 strings on every run: plain English, accents (precomposed and
decomposed), several scripts (Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai, Hangul, Japanese),
CJK ideographs, emoji (old and new, with modifiers and joiners), punctuation runs, control and
format characters, NUL and U+FFFD, odd whitespace, very long words (around the 100-character
limit), special tokens written in the text, the empty string, texts longer than 256 tokens, and
random mixes of all of these with random characters from many Unicode blocks.
"""

import random
import unicodedata

WORDS = (
    "the quick brown fox jumps over lazy dog serving models on cpus and gpus with low latency "
    "batch embedding sentence transformer tokenizer unbelievable internationalization "
    "photosynthesis antidisestablishmentarianism hello world ferry function platform request "
    "response cosine similarity vector database search query document passage running ran runs "
    "don't can't it's o'clock e-mail state-of-the-art U.S.A. Dr. Mr. 3.14 1,000,000 42nd 2026-11-29"
).split()

ACCENTED = ["café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "über", "Zürich",
            "São Paulo", "Kraków", "İstanbul", "ÉCOLE", "crème brûlée", "Dvořák", "Łódź",
            "smörgåsbord", "piñata", "coöperate", "Ærøskøbing", "Þórr", "straße", "ẞ"]
DECOMPOSED = ["cafe\u0301", "nai\u0308ve", "re\u0301sume\u0301", "A\u030angstro\u0308m",
              "e\u0301\u0327", "o\u0308\u0304", "a\u0323\u0302", "ạ\u0302", "\u0301alone"]
SCRIPTS = ["Καλημέρα κόσμε", "ΣΊΣΥΦΟΣ σίσυφος", "Привет, мир!", "Ёлка и ЙОГУРТ",
           "مرحبا بالعالم", "السَّلَامُ عَلَيْكُمْ", "שָׁלוֹם עוֹלָם", "नमस्ते दुनिया",
           "हिन्दी भाषा", "สวัสดีชาวโลก", "안녕하세요 세계", "한국어 텍스트",
           "こんにちは世界", "カタカナとひらがな", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ", "Ｈｅｌｌｏ！",
           "ﬁ ligature ﬂow", "Ⅻ Roman ⅻ", "① ② ③", "x² + y³ = z⁴", "½ ¾ ⅞",
           "Tiếng Việt có dấu", "Türkçe ığüşöç", "Ελληνικά ΐΰ", "ქართული ენა",
           "Հայերեն լեզու", "አማርኛ ቋንቋ", "ᚠᚢᚦᚨᚱᚲ runes", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙"]
CJK = ["中国", "北京欢迎你", "漢字テスト", "我爱自然语言处理", "日本語の文章です。",
       "繁體中文字", "㐀㐁㐂", "𠀀𠀁𠀂", "𪜀𫝀𫠠", "豈更車", "丽丸乁", "中文English混合",
       "第1章：概述", "「引用」と『二重』", "数字１２３和ABC"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸🇫🇷", "❤️", "✨🔥💯", "🥰🥳🫠🫶", "🧑🏿‍🚀",
         "☕ coffee", "I ❤ NY", "🏳️‍🌈", "🤖 robot", "keycap 1️⃣", "🦀🐍☁️"]
PUNCT = ["!!!", "???!!!", "...", "…", "—–-", "«guillemets»", "“smart quotes”", "‘single’",
         "¡Hola! ¿Qué tal?", "a/b\\c|d", "(x)[y]{z}<w>", "#hashtag @user $100 %50 ^up &and *star",
         "~tilde `tick` _under_", "foo.bar,baz;qux:quux", "«»‹›„‚", "§¶†‡•", "©®™",
         "¿¡", "、。〃〈〉《》「」", "‰‱′″", "⁂⁎⁑", "foo!!!bar???baz", "-.-.-", "''\"\"``"]
CONTROL = ["a\x00b", "tab\there", "new\nline", "cr\rlf\r\n", "bell\x07", "esc\x1b[31mred",
           "del\x7f", "\x0bvt\x0cff", "nel\x85", "zero\u200bwidth", "soft\u00adhyphen",
           "bom\ufeffmark", "rtl\u202eoverride", "join\u200dzwj", "repl\ufffdchar",
           "nbsp\u00a0space", "em\u2003space", "ideo\u3000space", "line\u2028sep", "para\u2029sep",
           "ogham\u1680space", "narrow\u202fnbsp", "private\ue000use", "\U000f0000plane15",
           "mongolian\u180evowel", "word\u2060joiner", "\x01\x02\x03", "\t\n\r "]
LONG_WORDS = ["a" * 99, "a" * 100, "a" * 101, "b" * 200, "x" * 1000,
              "pneumonoultramicroscopicsilicovolcanoconiosis" * 2,
              "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
              "é" * 100, "é" * 101, "中" * 150, "ab" * 51, "😀" * 101]
EDGE = ["", " ", "  ", "\n", "a", "A", "[CLS]", "[SEP] [PAD] [UNK] [MASK]", "##ing", "##",
        "#", "...a...", "a.b.c.d", "123", "007", "3.14159", "1e10", "0x1F", "C++", "C#",
        "http://example.com/path?q=1&r=2#frag", "user@example.com", "@#$%^&*()",
        "I'm", "O'Neil", "rock'n'roll", "co-operate", "e.g.", "i.e.,", "U.K."]


def long_text(rng, tokens):
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


POOLS = [WORDS, ACCENTED, DECOMPOSED, SCRIPTS, CJK, EMOJI, PUNCT, CONTROL, LONG_WORDS, EDGE]


def version_stable(c):
    """Whether tokenizers built on different Unicode versions must treat `c` alike: it had the
    same category in Unicode 3.2 as now, or it is new since and a letter, number or symbol
    (a word character everywhere). The reference library's category tables are older than
    utf8proc's; the code points this excludes are what `compare_tokenizer.py --sweep` counts."""
    old = unicodedata.ucd_3_2_0.category(c)
    new = unicodedata.category(c)
    if old != "Cn":
        return old == new
    return new[0] in "LNS"


def random_char(rng):
    """A random version-stable code point from blocks the corpus should cover."""
    while True:
        c = _random_code_point(rng)
        if version_stable(c):
            return c


def _random_code_point(rng):
    block = rng.choice([(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F),
                        (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF),
                        (0x2000, 0x206F), (0x2100, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF),
                        (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFE00, 0xFFFD), (0x1F300, 0x1FAFF),
                        (0x20000, 0x2A6DF), (0x0, 0x1F)])
    return chr(rng.randint(*block))


def corpus(n_random=1500, seed=20261129):
    rng = random.Random(seed)
    out = []
    for pool in POOLS:
        out.extend(pool)
    # Every pair of pools mixed, in a few shapes.
    for a in POOLS:
        for b in POOLS:
            x, y = rng.choice(a), rng.choice(b)
            out.append(x + y)
            out.append(f"{x} {y}")
            out.append(f"{x.upper()}, {y}!")
    # Texts over 256 tokens (truncation) and just around it.
    for tokens in (200, 253, 254, 255, 256, 300, 600, 2000):
        out.append(long_text(rng, tokens))
    out.append("中" * 300)
    out.append("! " * 400)
    # Random mixes: words from every pool, random characters, random whitespace.
    for _ in range(n_random):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(rng.choice(POOLS)))
            elif r < 0.9:
                parts.append("".join(random_char(rng) for _ in range(rng.randint(1, 8))))
            else:
                parts.append(rng.choice(["\t", "\n", "  ", "\u00a0", "", "-", "'"]))
        out.append(rng.choice(["", " ", "\t"]).join(parts))
    return out


if __name__ == "__main__":
    texts = corpus()
    print(len(texts), "strings")
