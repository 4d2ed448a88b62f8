"""Few-shot language identification data: languages, Zipf-sampled sentences, hashed n-gram features.

Data. ``wordfreq`` (Speer, 2022) ships frequency-ranked word lists for 42 languages, offline. A
"sentence" of language l is ``words_per_sentence`` words drawn independently with their frequencies,

    P(w | l) = f_l(w) / sum_{w' in top-n(l)} f_l(w'),

(Zipf's law makes a few words very common, the way real text is). No grammar, but the character
statistics of real words: what Cavnar & Trenkle (1994) classify languages by.

Features (Cavnar & Trenkle 1994; Weinberger et al. 2009). A sentence s is lower-cased, its runs of
white space become one space, and one space is added at each end (so a word's first and last letters
form n-grams with the boundary). Every substring g of length n, n_min <= n <= n_max, is counted into the
bucket h(g) = crc32(utf8(g)) mod B:

    x_b(s) = #{ n-grams g of s : h(g) = b },        b = 0 .. B-1.

Hashing maps the unbounded n-gram vocabulary to B dimensions without a dictionary; two n-grams that
share a bucket collide and add up (few for B >> the n-grams of a sentence). crc32 is a fixed function:
Python's ``hash()`` of a string is salted per process (PYTHONHASHSEED), so it would give every run
different features. The featuriser then scales each row (``norm``): ``"l2"`` to unit length (the
default: sentences of different lengths become comparable), ``"l1"`` to frequencies, or ``None``.

Splits are by *language*: meta-test languages never appear in meta-training. The "hard" split holds out
languages whose script and family meta-training also has (Portuguese beside Spanish, Slovak beside
Czech, Ukrainian beside Russian...): the "new dialect" case.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

from .episodes import ClassSet, check_disjoint

__all__ = ["LANGUAGES", "language_table", "word_distribution", "sample_sentences", "bucket",
           "sentence_ngrams", "NGramFeaturizer", "language_class_set", "random_language_split",
           "HARD_HELD_OUT", "hard_language_split", "check_language_split", "code_of", "split_class_sets"]

# code: (name, script, family) for every language wordfreq 3.1 ships in its 'small' lists
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "ar": ("Arabic", "Arabic", "Semitic"), "bg": ("Bulgarian", "Cyrillic", "Slavic"),
    "bn": ("Bengali", "Bengali", "Indo-Aryan"), "ca": ("Catalan", "Latin", "Romance"),
    "cs": ("Czech", "Latin", "Slavic"), "da": ("Danish", "Latin", "Germanic"),
    "de": ("German", "Latin", "Germanic"), "el": ("Greek", "Greek", "Hellenic"),
    "en": ("English", "Latin", "Germanic"), "es": ("Spanish", "Latin", "Romance"),
    "fa": ("Persian", "Arabic", "Iranian"), "fi": ("Finnish", "Latin", "Uralic"),
    "fil": ("Filipino", "Latin", "Austronesian"), "fr": ("French", "Latin", "Romance"),
    "he": ("Hebrew", "Hebrew", "Semitic"), "hi": ("Hindi", "Devanagari", "Indo-Aryan"),
    "hu": ("Hungarian", "Latin", "Uralic"), "id": ("Indonesian", "Latin", "Austronesian"),
    "is": ("Icelandic", "Latin", "Germanic"), "it": ("Italian", "Latin", "Romance"),
    "ja": ("Japanese", "Japanese", "Japonic"), "ko": ("Korean", "Hangul", "Koreanic"),
    "lt": ("Lithuanian", "Latin", "Baltic"), "lv": ("Latvian", "Latin", "Baltic"),
    "mk": ("Macedonian", "Cyrillic", "Slavic"), "ms": ("Malay", "Latin", "Austronesian"),
    "nb": ("Norwegian Bokmål", "Latin", "Germanic"), "nl": ("Dutch", "Latin", "Germanic"),
    "pl": ("Polish", "Latin", "Slavic"), "pt": ("Portuguese", "Latin", "Romance"),
    "ro": ("Romanian", "Latin", "Romance"), "ru": ("Russian", "Cyrillic", "Slavic"),
    "sh": ("Serbo-Croatian", "Latin", "Slavic"), "sk": ("Slovak", "Latin", "Slavic"),
    "sl": ("Slovenian", "Latin", "Slavic"), "sv": ("Swedish", "Latin", "Germanic"),
    "ta": ("Tamil", "Tamil", "Dravidian"), "tr": ("Turkish", "Latin", "Turkic"),
    "uk": ("Ukrainian", "Cyrillic", "Slavic"), "ur": ("Urdu", "Arabic", "Indo-Aryan"),
    "vi": ("Vietnamese", "Latin", "Austroasiatic"), "zh": ("Chinese", "Han", "Sinitic"),
}

# held out in the hard split; each has a language of the same script and family in meta-training
HARD_HELD_OUT = ("pt", "ca", "ro", "sk", "sl", "uk", "mk", "nb", "ms")


def _check_code(code: str) -> None:
    if not isinstance(code, str):
        raise ValueError(f"A language is given by its wordfreq code (a str such as 'en'), got {type(code).__name__}.")
    if code not in LANGUAGES:
        raise ValueError(f"Unknown language {code!r}. Use one of the {len(LANGUAGES)} wordfreq codes: "
                         f"{', '.join(sorted(LANGUAGES))} (text_data.LANGUAGES lists names, scripts, families).")


def _check_int(name: str, v: object, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


def language_table(codes: Sequence[str] | None = None) -> list[tuple[str, str, str, str]]:
    """Rows ``(code, name, script, family)`` for ``codes`` (default: all 42), in that order."""
    codes = sorted(LANGUAGES) if codes is None else list(codes)
    for c in codes:
        _check_code(c)
    return [(c, *LANGUAGES[c]) for c in codes]


@lru_cache(maxsize=None)
def word_distribution(code: str, n_words: int = 3000) -> tuple[tuple[str, ...], Tensor]:
    """The ``n_words`` most frequent words of ``code`` and their probabilities (summing to 1)."""
    _check_code(code)
    _check_int("n_words", n_words, 1)
    import wordfreq  # imported here: only the text chapter needs it

    freq = wordfreq.get_frequency_dict(code, wordlist="small")
    top = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:n_words]
    p = torch.tensor([f for _, f in top], dtype=torch.float64)
    return tuple(w for w, _ in top), p / p.sum()


def sample_sentences(code: str, n_sentences: int, words_per_sentence: int = 6, seed: int = 0,
                     n_words: int = 3000) -> list[str]:
    """``n_sentences`` pseudo-sentences of ``code``: words drawn with their frequencies (seeded).

    The seed is combined with a crc32 of the code, so each language draws its own stream and the result
    is the same in every process.
    """
    _check_code(code)
    _check_int("n_sentences", n_sentences, 1)
    _check_int("words_per_sentence", words_per_sentence, 1)
    _check_int("seed", seed, 0)
    words, p = word_distribution(code, n_words)
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(code.encode()))
    idx = torch.multinomial(p, n_sentences * words_per_sentence, replacement=True, generator=g)
    rows = idx.view(n_sentences, words_per_sentence).tolist()
    return [" ".join(words[i] for i in row) for row in rows]


def bucket(gram: str, n_buckets: int) -> int:
    """h(g) = crc32(utf8(g)) mod B: the same in every process (unlike Python's salted ``hash``)."""
    return zlib.crc32(gram.encode("utf-8")) % n_buckets


def sentence_ngrams(sentence: str, n_min: int = 1, n_max: int = 3) -> list[str]:
    """The character n-grams (n_min <= n <= n_max) of ``' ' + lower-cased, space-normalised s + ' '``."""
    if not isinstance(sentence, str):
        raise ValueError(f"A sentence must be a str, got {type(sentence).__name__}: {sentence!r:.60}.")
    s = " " + " ".join(sentence.lower().split()) + " "
    return [s[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(s) - n + 1)]


@dataclass(frozen=True)
class NGramFeaturizer:
    """Sentences -> hashed character n-gram counts ``(len, n_buckets)``, each row scaled by ``norm``.

    A frozen dataclass: its repr names every setting, so a cache key that includes it changes when a
    setting does.
    """

    n_min: int = 1
    n_max: int = 3
    n_buckets: int = 4096
    norm: str | None = "l2"
    sqrt: bool = False          # square-root the counts before scaling (Hellinger): no parameters

    def __post_init__(self) -> None:
        _check_int("n_min", self.n_min, 1)
        _check_int("n_max", self.n_max, self.n_min)
        _check_int("n_buckets", self.n_buckets, 1)
        if self.norm not in ("l2", "l1", None):
            raise ValueError(f"norm must be 'l2', 'l1' or None, got {self.norm!r}.")

    def counts(self, sentences: Sequence[str]) -> Tensor:
        """The raw counts x_b(s), float32, one row per sentence."""
        if isinstance(sentences, str):
            raise ValueError("Give a list of sentences, not one str (a str would be read letter by letter): "
                             "featurizer([sentence]).")
        out = torch.zeros(len(sentences), self.n_buckets)
        for i, s in enumerate(sentences):
            for g in sentence_ngrams(s, self.n_min, self.n_max):
                out[i, bucket(g, self.n_buckets)] += 1
        return out

    def __call__(self, sentences: Sequence[str]) -> Tensor:
        x = self.counts(sentences)
        if self.sqrt:
            x = x.sqrt()
        if self.norm == "l2":
            return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.norm == "l1":
            return x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return x


def language_class_set(codes: Sequence[str] | None = None, n_sentences: int = 60,
                       words_per_sentence: int = 6, seed: int = 0,
                       featurizer: NGramFeaturizer | None = None, title: str | None = None) -> ClassSet:
    """A ClassSet of languages: items are sentences, ``alphabets`` the scripts, features hashed n-grams.

    The title (``title`` or "N languages") is followed by how the set was made (sentences, seed,
    featuriser), so that a cache key that holds the title changes with any of them.

    Class names are ``'Latin/Romance/pt'`` (script/family/code). Episodes featurise only the sentences
    they draw; ``.featurised()`` featurises all of them once (faster for many episodes).
    """
    codes = sorted(LANGUAGES) if codes is None else list(codes)
    if not codes:
        raise ValueError("language_class_set needs at least one language code.")
    if len(set(codes)) != len(codes):
        raise ValueError(f"Each language may appear once; repeated: {sorted({c for c in codes if codes.count(c) > 1})}.")
    for c in codes:
        _check_code(c)
    featurizer = featurizer or NGramFeaturizer()
    x = [sample_sentences(c, n_sentences, words_per_sentence, seed) for c in codes]
    names = ["/".join((LANGUAGES[c][1], LANGUAGES[c][2], c)) for c in codes]
    title = title or f"{len(codes)} languages"
    return ClassSet(x, names, [LANGUAGES[c][1] for c in codes],
                    f"{title} ({n_sentences} sentences of {words_per_sentence} words, seed {seed}, {featurizer!r})",
                    featurizer)


def code_of(name: str) -> str:
    """The language code of a class name ``'script/family/code'``."""
    return name.rsplit("/", 1)[-1]


def check_language_split(train: Sequence[str], test: Sequence[str]) -> None:
    """Raise ``ValueError`` if a language is in both lists (or is unknown)."""
    for c in [*train, *test]:
        _check_code(c)
    both = sorted(set(train) & set(test))
    if both:
        raise ValueError(f"Language splits overlap: {both} are in both meta-training and meta-test. "
                         "Split by language, so every meta-test language is new.")


def random_language_split(n_test: int = 14, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_codes, test_codes)``: ``n_test`` languages held out at random, across all scripts."""
    _check_int("n_test", n_test, 1)
    codes = sorted(LANGUAGES)
    if n_test >= len(codes):
        raise ValueError(f"n_test = {n_test} leaves no meta-training language (there are {len(codes)}).")
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed)).tolist()
    test = sorted(codes[i] for i in order[:n_test])
    train = sorted(c for c in codes if c not in test)
    check_language_split(train, test)
    return train, test


def hard_language_split(held_out: Sequence[str] = HARD_HELD_OUT) -> tuple[list[str], list[str]]:
    """``(train_codes, test_codes)`` where every test language shares script and family with a training one."""
    test = sorted(held_out)
    for c in test:
        _check_code(c)
    train = sorted(c for c in LANGUAGES if c not in test)
    check_language_split(train, test)
    lonely = [c for c in test if not any(LANGUAGES[t][1:] == LANGUAGES[c][1:] for t in train)]
    if lonely:
        raise ValueError(f"{lonely} share script and family with no training language, so this is not the "
                         "hard (same-script, same-family) split; hold out other languages.")
    return train, test


def split_class_sets(train_codes: Sequence[str], test_codes: Sequence[str], **kwargs) -> tuple[ClassSet, ClassSet]:
    """Two disjoint language ClassSets (keyword arguments go to :func:`language_class_set`)."""
    check_language_split(train_codes, test_codes)
    tr = language_class_set(train_codes, title=f"{len(train_codes)} meta-training languages", **kwargs)
    te = language_class_set(test_codes, title=f"{len(test_codes)} held-out languages", **kwargs)
    check_disjoint(tr, te)
    return tr, te
