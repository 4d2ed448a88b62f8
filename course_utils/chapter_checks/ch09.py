"""Checks for chapter 09 (few-shot recognition of a new language from a few sentences).

Exercises and the references' semantics (the references agree with :mod:`course_utils.text_data` and
:mod:`course_utils.text`, which the tests confirm):

- 9.1 ``ngram_counts(sentences, n_min, n_max, n_buckets) -> (len(sentences), n_buckets)`` float tensor of
  raw counts: each sentence lower-cased, runs of white space made one space, one space added at each end;
  every character n-gram g with n_min <= n <= n_max (inclusive) counted into bucket
  ``zlib.crc32(g.encode('utf-8')) % n_buckets`` (text_data.NGramFeaturizer(norm=None)).
- 9.2 ``language_episode(sentences, n_way, k_shot, q_query, generator) -> (support, support_y, query,
  query_y, languages)``: ``sentences`` a dict language -> list of str; n_way distinct languages drawn at
  random with ``generator``; k_shot + q_query distinct sentences of each (by position in its list); lists of
  str support (N*K) and query (N*Q), class-major; long labels ``arange(N).repeat_interleave(K)`` (and Q);
  ``languages[n]`` the language of label n. A ValueError when there are fewer than n_way languages or a
  language has fewer than k_shot + q_query sentences.
- 9.3 ``generalisation_gap(acc_train, acc_held_out) -> (gap, half_width)``: mean(acc_train) -
  mean(acc_held_out) and 1.96 * sqrt(s_1^2/n_1 + s_2^2/n_2) (sample std, n - 1; independent episodes).

Each probe calls the student's function several times, changing every argument. Named mistakes:

- 9.1: Python's salted ``hash()``; no boundary spaces; case kept; n_max exclusive (range off by one); n_min
  ignored (from 1); n_min and n_max both ignored (lengths fixed at 1..3); presence instead of counts; rows normalised (L1 or L2); UTF-8 bytes instead of
  characters; white space not normalised; each word padded on its own (no n-grams across words); n_buckets
  ignored (a fixed width); not a tensor.
- 9.2: k_shot and q_query swapped; not class-major (labels interleaved, or shuffled); labels not 0..N-1
  (the language's position in the dict); labels not long; labels that do not match ``languages``; support
  and query sharing a sentence; sentences drawn with replacement; the generator ignored (global RNG, or a
  fixed draw); the same languages in every episode; languages always in the dict's order (the label
  tells the language); a language twice; the sentences always the first k_shot + q_query of each list (no
  random draw); too few sentences (or languages) not raising ValueError, or a ValueError whose message says
  neither what is wrong nor what to do (no number, no language, no argument name).
- 9.3: the sign reversed; the standard deviation instead of the standard error (no sqrt(n)); the two
  half-widths added; population std (n); percent instead of a fraction; z = 2; no factor (z = 1); the full
  width (2 x 1.96); a paired difference; the pooled count (n_1 + n_2); list inputs not converted
  (AttributeError).
"""
from __future__ import annotations

import math
import re
import zlib
from typing import Any, Callable

import torch
from torch import Tensor

from ..checks import Mistake, describe, run_check
from ..evaluation import Z95

__all__ = ["EXERCISES", "ngram_counts", "language_episode", "generalisation_gap",
           "reference_ngram_counts", "reference_language_episode", "reference_generalisation_gap",
           "COUNT_MISTAKES", "EPISODE_MISTAKES", "GAP_MISTAKES"]

EXERCISES = ["9.1", "9.2", "9.3"]


# ----------------------------------------------------------------------------- references

def _grams(s: str, n_min: int, n_max: int) -> list[str]:
    s = " " + " ".join(s.lower().split()) + " "
    return [s[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(s) - n + 1)]


def _count(grams_per_sentence: list[list[Any]], n_buckets: int, h: Callable[[Any], int]) -> Tensor:
    out = torch.zeros(len(grams_per_sentence), n_buckets)
    for i, grams in enumerate(grams_per_sentence):
        for g in grams:
            out[i, h(g) % n_buckets] += 1
    return out


def _crc(g: str | bytes) -> int:
    return zlib.crc32(g if isinstance(g, bytes) else g.encode("utf-8"))


def reference_ngram_counts(sentences: list[str], n_min: int, n_max: int, n_buckets: int) -> Tensor:
    """Hashed character n-gram counts, float32 ``(len(sentences), n_buckets)``."""
    return _count([_grams(s, n_min, n_max) for s in sentences], n_buckets, _crc)


def reference_language_episode(sentences: dict, n_way: int, k_shot: int, q_query: int,
                               generator: torch.Generator):
    """One N-way K-shot episode of sentences, class-major: ``(support, support_y, query, query_y, languages)``."""
    names = list(sentences)
    if n_way > len(names):
        raise ValueError(f"A {n_way}-way episode needs {n_way} languages; got {len(names)}.")
    few = [n for n in names if len(sentences[n]) < k_shot + q_query]
    if few:
        raise ValueError(f"{few} have fewer than k_shot + q_query = {k_shot + q_query} sentences.")
    chosen = [names[i] for i in torch.randperm(len(names), generator=generator)[:n_way].tolist()]
    support, query = [], []
    for lang in chosen:
        pick = torch.randperm(len(sentences[lang]), generator=generator)[:k_shot + q_query].tolist()
        support += [sentences[lang][i] for i in pick[:k_shot]]
        query += [sentences[lang][i] for i in pick[k_shot:]]
    y = torch.arange(n_way)
    return support, y.repeat_interleave(k_shot), query, y.repeat_interleave(q_query), chosen


def reference_generalisation_gap(acc_train, acc_held_out) -> tuple[float, float]:
    """``(mean(a) - mean(b), 1.96 * sqrt(var(a)/n_a + var(b)/n_b))``."""
    a = torch.as_tensor(acc_train, dtype=torch.float64).flatten()
    b = torch.as_tensor(acc_held_out, dtype=torch.float64).flatten()
    return (a.mean() - b.mean()).item(), Z95 * math.sqrt(a.var().item() / len(a) + b.var().item() / len(b))


# ----------------------------------------------------------------------------- 9.1

COUNT_RULE = ("s = ' ' + ' '.join(sentence.lower().split()) + ' '; for n in range(n_min, n_max + 1), every "
              "s[i:i + n] adds 1 to bucket zlib.crc32(gram.encode('utf-8')) % n_buckets.")

COUNT_MISTAKES = {
    "python_hash": ("the buckets come from Python's hash(): it is salted per process (PYTHONHASHSEED), so "
                    "the same sentence gets different features in every run and a cached model is "
                    "meaningless next time. Use zlib.crc32(gram.encode('utf-8')) % n_buckets."),
    "no_padding": ("no boundary spaces: without ' ' at both ends the first and last letters of the sentence "
                   "form no n-grams with the boundary (' t', 'e '), which carry much of a language's "
                   "signature (word beginnings and endings). " + COUNT_RULE),
    "no_lower": ("the case is kept: 'The' and 'the' give different n-grams. Lower-case the sentence first "
                 "(sentence.lower()), as the featuriser does. " + COUNT_RULE),
    "off_by_one": ("n_max is left out (range(n_min, n_max) stops before n_max): the orders are inclusive, "
                   "range(n_min, n_max + 1)."),
    "n_min_ignored": ("n_min is ignored: the n-grams start at length 1 whatever n_min is. Use "
                      "range(n_min, n_max + 1)."),
    "fixed_lengths": ("n_min and n_max are ignored: the lengths look fixed at 1..3 whatever the arguments "
                      "say. Use range(n_min, n_max + 1)."),
    "presence": ("presence instead of counts: a bucket is 1 however often its n-grams occur. The features "
                 "are counts: add 1 for every occurrence (+= 1, not = 1)."),
    "l2": ("each row is scaled to unit length: this exercise asks for the raw counts (the featuriser "
           "normalises afterwards, NGramFeaturizer.norm). Return the counts unscaled."),
    "l1": ("each row is divided by its total (frequencies): this exercise asks for the raw counts (the "
           "featuriser normalises afterwards). Return the counts unscaled."),
    "bytes": ("the n-grams are of UTF-8 bytes, not characters: 'é' is two bytes, so a Greek or Cyrillic "
              "letter alone makes byte pairs and character n-grams are split. Take substrings of the str, "
              "then encode each n-gram for the hash: zlib.crc32(s[i:i + n].encode('utf-8'))."),
    "spaces": ("white space is not normalised: a double space or a tab makes n-grams the same words "
               "written with one space do not have. Use ' '.join(sentence.lower().split())."),
    "per_word": ("each word is padded on its own (' w ' for each word): n-grams across a word boundary "
                 "('e t', the space between words counted once) are missing and every word adds its own "
                 "two boundary spaces. Pad the whole sentence once: ' ' + ' '.join(words) + ' '."),
}


def _count_variants(sentences: list[str], n_min: int, n_max: int, n_buckets: int) -> dict[str, Tensor]:
    ref = reference_ngram_counts(sentences, n_min, n_max, n_buckets)

    def grams_raw(s: str, lo: int, hi: int) -> list[str]:
        return [s[i:i + n] for n in range(lo, hi + 1) for i in range(len(s) - n + 1)]

    norm = " ".join
    v = {
        "python_hash": _count([_grams(s, n_min, n_max) for s in sentences], n_buckets, hash),
        "no_padding": _count([grams_raw(norm(s.lower().split()), n_min, n_max) for s in sentences], n_buckets, _crc),
        "no_lower": _count([grams_raw(" " + norm(s.split()) + " ", n_min, n_max) for s in sentences], n_buckets, _crc),
        "n_min_ignored": reference_ngram_counts(sentences, 1, n_max, n_buckets),
        "presence": (ref > 0).float(),
        "l2": ref / ref.norm(dim=1, keepdim=True).clamp_min(1e-12),
        "l1": ref / ref.sum(dim=1, keepdim=True).clamp_min(1e-12),
        "bytes": _count([[b[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(b) - n + 1)]
                         for b in ((" " + norm(s.lower().split()) + " ").encode("utf-8") for s in sentences)],
                        n_buckets, _crc),
        "spaces": _count([grams_raw(" " + s.lower() + " ", n_min, n_max) for s in sentences], n_buckets, _crc),
        "per_word": _count([[g for w in s.lower().split() for g in grams_raw(" " + w + " ", n_min, n_max)]
                            for s in sentences], n_buckets, _crc),
    }
    if (n_min, n_max) != (1, 3):
        v["fixed_lengths"] = reference_ngram_counts(sentences, 1, 3, n_buckets)
    if n_max > n_min:
        v["off_by_one"] = reference_ngram_counts(sentences, n_min, n_max - 1, n_buckets)
    return v


SENTENCES = ["The cat sat", "été  à Paris", "και το να", "aaa aa", "Ünïcode\tTab x"]


def _count_calls() -> list[tuple[list[str], int, int, int, str]]:
    return [(SENTENCES, 1, 3, 64, "5 sentences, n = 1..3, 64 buckets"),
            (SENTENCES[:3], 2, 4, 97, "3 sentences, n = 2..4, 97 buckets"),
            (SENTENCES[3:], 1, 2, 16, "2 sentences, n = 1..2, 16 buckets"),
            (["Zürich ist schön", "в Москве"], 3, 3, 1000, "2 sentences, n = 3 only, 1000 buckets")]


def _probe_counts(fn: Callable) -> None:
    for sents, lo, hi, b, desc in _count_calls():
        out = fn(list(sents), lo, hi, b)
        if not isinstance(out, Tensor):
            raise Mistake(f"ngram_counts ({desc}) should return a torch.Tensor of shape ({len(sents)}, {b}); "
                          f"it returned {describe(out)}.",
                          "Start from torch.zeros(len(sentences), n_buckets) and add 1 per n-gram.")
        if tuple(out.shape) != (len(sents), b):
            extra = (" The width must be n_buckets (here " + str(b) + "): n_buckets is ignored or fixed."
                     if out.dim() == 2 and out.shape[0] == len(sents) else "")
            raise Mistake(f"ngram_counts ({desc}) has shape {tuple(out.shape)}, expected ({len(sents)}, {b}): one "
                          f"row per sentence, one column per bucket.{extra}")
        if not out.is_floating_point():
            raise Mistake(f"ngram_counts ({desc}) has dtype {out.dtype}; return floats (torch.zeros(...) is "
                          "float32), as the encoders multiply them with float weights.")
        got = out.detach().float()
        ref = reference_ngram_counts(sents, lo, hi, b)
        if torch.allclose(got, ref, atol=1e-5):
            continue
        for name, wrong in _count_variants(sents, lo, hi, b).items():
            if torch.allclose(got, wrong, atol=1e-5):
                raise Mistake(f"ngram_counts ({desc}): wrong. It looks like {COUNT_MISTAKES[name]}")
        i, j = (got - ref).abs().gt(1e-5).nonzero()[0].tolist()
        raise Mistake(f"ngram_counts ({desc}): sentence {i} ({sents[i]!r}), bucket {j}: got {got[i, j].item():g}, "
                      f"expected {ref[i, j].item():g}.", COUNT_RULE)


def ngram_counts(student: Callable) -> Callable:
    """Exercise 9.1: hashed character n-gram counts."""
    return run_check("9.1", "hashed character n-gram counts", student, reference_ngram_counts, _probe_counts)


# ----------------------------------------------------------------------------- 9.2

EPISODE_RULE = ("languages = [names[i] for i in torch.randperm(len(names), generator=generator)[:n_way]]; for "
                "each, pick = torch.randperm(len(its list), generator=generator)[:k_shot + q_query]: the first "
                "k_shot to the support, the rest to the query; labels torch.arange(n_way).repeat_interleave(k).")

EPISODE_MISTAKES = {
    "swapped": "k_shot and q_query are swapped: the support has N*Q sentences and the query N*K.",
    "interleaved": ("the support is not class-major: labels 0, 1, 2, ..., 0, 1, 2 (arange(N).repeat(K)). The "
                    "course's episodes are class-major, K sentences of label 0, then K of label 1...: "
                    "torch.arange(n_way).repeat_interleave(k_shot) (prototypes reshape (N, K, D))."),
    "shuffled": "the support is not class-major: its labels are in a shuffled order. " ,
    "dict_index": ("the labels are the languages' positions in the dict, not 0..N-1: an episode's labels "
                   "are always 0..n_way-1, in the order of `languages`."),
    "not_long": "the labels are not torch.long (F.cross_entropy and indexing need long labels).",
    "mismatch": ("a sentence's label does not match `languages`: the sentence with label n must come from "
                 "sentences[languages[n]]."),
    "overlap": ("the support and the query share a sentence: a query that is also a support example is "
                "answered by memory, not by recognising the language. Draw k_shot + q_query distinct "
                "positions once (torch.randperm(...)[:k_shot + q_query]) and split them."),
    "replacement": ("a sentence appears twice in the support or the query: the sentences are drawn with "
                    "replacement. Use torch.randperm (without replacement), not torch.randint."),
    "global_rng": ("the generator is ignored: two calls with generators seeded alike give different episodes "
                   "(the global random state, or Python's random module, is used). Pass generator= to every "
                   "torch.randperm."),
    "fixed": ("the generator is ignored: generators with different seeds give the same episode. Draw the "
              "languages and the sentences with torch.randperm(..., generator=generator)."),
    "same_languages": ("every episode has the same languages (the first n_way of the dict?): a meta-learner "
                       "would see only those. Draw them at random with the generator."),
    "dict_order": ("the languages always come in the dict's order, so the label says which language it is "
                   "(label 0 is always the earliest): shuffle them, torch.randperm(len(names), generator="
                   "generator)[:n_way] gives random languages in a random order."),
    "repeated_language": "a language appears twice in `languages`: the n_way languages must be distinct.",
    "first_sentences": ("the sentences are always the first K + Q of each list: draw them at random with "
                        "torch.randperm(..., generator=generator), so that other seeds give other sentences."),
    "vague_error": ("the ValueError should say what is wrong and what to do: name the language (or the "
                    "numbers, or the argument to change), e.g. raise ValueError(f\"{lang} has only {m} "
                    "sentences, fewer than k_shot + q_query = {k_shot + q_query}; lower k_shot or q_query\")."),
    "too_few": ("no ValueError for a language with fewer than k_shot + q_query sentences (or for fewer than "
                "n_way languages): say what is missing and what to do, e.g. raise ValueError(f\"{lang} has "
                "only {m} sentences; lower k_shot or q_query\")."),
}


def _probe_sentences() -> dict[str, list[str]]:
    sizes = {"en": 9, "fr": 7, "de": 12, "pl": 8, "ru": 10, "ja": 6, "tr": 11}
    return {lang: [f"{lang}-{i:02d}" for i in range(m)] for lang, m in sizes.items()}


def _expect_episode(out: Any, desc: str) -> tuple[list, Tensor, list, Tensor, list]:
    if not (isinstance(out, (tuple, list)) and len(out) == 5):
        raise Mistake(f"language_episode ({desc}) should return (support, support_y, query, query_y, languages); "
                      f"it returned {describe(out)}.")
    s, ys, q, yq, langs = out
    for what, v in (("support", s), ("query", q), ("languages", langs)):
        if not isinstance(v, (list, tuple)):
            raise Mistake(f"{what} ({desc}) should be a list; it is {describe(v)}.")
    for what, v in (("support_y", ys), ("query_y", yq)):
        if not isinstance(v, Tensor):
            raise Mistake(f"{what} ({desc}) should be a torch.Tensor of labels; it is {describe(v)}.")
    return list(s), ys, list(q), yq, list(langs)


def _structure(out: tuple, data: dict, n: int, k: int, q: int, desc: str) -> None:
    s, ys, qs, yq, langs = out
    if len(s) == n * q and len(qs) == n * k and k != q:
        raise Mistake(f"language_episode ({desc}): {EPISODE_MISTAKES['swapped']}")
    if len(s) != n * k or len(qs) != n * q:
        raise Mistake(f"language_episode ({desc}): {len(s)} support and {len(qs)} query sentences, expected "
                      f"n_way * k_shot = {n * k} and n_way * q_query = {n * q}.", EPISODE_RULE)
    if len(langs) != n:
        raise Mistake(f"languages ({desc}) has {len(langs)} entries, expected n_way = {n}.")
    if len(set(langs)) != n:
        raise Mistake(f"language_episode ({desc}): {EPISODE_MISTAKES['repeated_language']}")
    if any(lang not in data for lang in langs):
        raise Mistake(f"languages ({desc}) = {langs} names languages that are not keys of `sentences`.")
    for what, y, m in (("support_y", ys, k), ("query_y", yq, q)):
        if tuple(y.shape) != (n * m,):
            raise Mistake(f"{what} ({desc}) has shape {tuple(y.shape)}, expected ({n * m},).")
        if y.dtype != torch.long:
            raise Mistake(f"{what} ({desc}): {EPISODE_MISTAKES['not_long']}")
        if y.min() < 0 or y.max() >= n:
            names = list(data)
            extra = (EPISODE_MISTAKES["dict_index"] if all(0 <= v < len(names) for v in y.tolist()) else
                     "labels must be in 0..n_way-1.")
            raise Mistake(f"{what} ({desc}) = {y.tolist()}: {extra}")
        major = torch.arange(n).repeat_interleave(m)
        if not torch.equal(y.cpu(), major):
            if torch.equal(y.cpu(), torch.arange(n).repeat(m)) and m > 1:
                raise Mistake(f"{what} ({desc}): {EPISODE_MISTAKES['interleaved']}")
            raise Mistake(f"{what} ({desc}) = {y.tolist()}: {EPISODE_MISTAKES['shuffled']}"
                          f"Expected {major.tolist()}.")
    for what, items, y in (("support", s, ys), ("query", qs, yq)):
        for sent, label in zip(items, y.tolist()):
            if sent not in data[langs[label]]:
                raise Mistake(f"{what} ({desc}): {sent!r} has label {label}, but languages[{label}] = "
                              f"{langs[label]!r}: {EPISODE_MISTAKES['mismatch']}")
        if len(set(items)) != len(items):
            raise Mistake(f"{what} ({desc}): {EPISODE_MISTAKES['replacement']}")
    if set(s) & set(qs):
        raise Mistake(f"language_episode ({desc}): {EPISODE_MISTAKES['overlap']} Shared: {sorted(set(s) & set(qs))[:3]}.")


def _probe_episode(fn: Callable) -> None:
    data = _probe_sentences()
    names = list(data)
    calls = [(5, 2, 3, "5-way 2-shot, 3 queries"), (3, 1, 5, "3-way 1-shot, 5 queries"),
             (4, 3, 2, "4-way 3-shot, 2 queries"), (7, 1, 1, "7-way 1-shot, 1 query (all languages)")]
    outs = {}
    for n, k, q, desc in calls:
        for seed in range(12):
            out = _expect_episode(fn(data, n, k, q, torch.Generator().manual_seed(seed)), desc)
            _structure(out, data, n, k, q, f"{desc}, seed {seed}")
            outs[(n, k, q, seed)] = out
    a = outs[(5, 2, 3, 0)]
    b = _expect_episode(fn(data, 5, 2, 3, torch.Generator().manual_seed(0)), "5-way 2-shot, seed 0 again")
    if a[0] != b[0] or a[4] != b[4]:
        raise Mistake(f"language_episode: {EPISODE_MISTAKES['global_rng']}")
    per_seed = [outs[(5, 2, 3, s)] for s in range(12)]
    if all(o[0] == per_seed[0][0] and o[4] == per_seed[0][4] for o in per_seed):
        raise Mistake(f"language_episode: {EPISODE_MISTAKES['fixed']}")
    if all(set(o[4]) == set(per_seed[0][4]) for o in per_seed) and len(per_seed[0][4]) < len(names):
        raise Mistake(f"language_episode (5-way, 12 seeds): {EPISODE_MISTAKES['same_languages']}")
    ordered = [o[4] == sorted(o[4], key=names.index) for (n, _, _, _), o in outs.items() if n > 1]
    if all(ordered):
        raise Mistake(f"language_episode (48 episodes): {EPISODE_MISTAKES['dict_order']}")
    drawn: dict[tuple, set] = {}                 # (call, language) -> the sets of sentences drawn over the seeds
    first = True
    for (n, k, q, seed), (s, ys, qs, yq, langs) in outs.items():
        for label, lang in enumerate(langs):
            picked = frozenset([x for x, y in zip(s, ys.tolist()) if y == label] +
                               [x for x, y in zip(qs, yq.tolist()) if y == label])
            first = first and picked == frozenset(data[lang][:k + q])
            drawn.setdefault((n, k, q, lang), set()).add(picked)
    if first:
        raise Mistake(f"language_episode (48 episodes, 12 seeds): {EPISODE_MISTAKES['first_sentences']}")
    if all(len(v) == 1 for v in drawn.values()):
        raise Mistake("language_episode (48 episodes, 12 seeds): each language gets the same sentences whatever "
                      "the generator's seed: draw them at random with torch.randperm(..., generator=generator).")
    few = dict(data)
    few["ja"] = data["ja"][:3]
    for args, what in (((few, 7, 2, 2), "7-way 2-shot 2 queries where 'ja' has only 3 sentences"),
                       ((data, 8, 1, 1), "8-way episode from 7 languages")):
        try:
            fn(*args, torch.Generator().manual_seed(0))
        except ValueError as e:
            if not _says_what(str(e), args[0]):
                raise Mistake(f"language_episode ({what}) raised ValueError({str(e)!r}): "
                              f"{EPISODE_MISTAKES['vague_error']}") from None
            continue
        except Exception as e:
            raise Mistake(f"language_episode ({what}) raised {type(e).__name__}: {e}; raise a ValueError that says "
                          "what is missing and what to do.") from None
        raise Mistake(f"language_episode ({what}): {EPISODE_MISTAKES['too_few']}")


def _says_what(msg: str, data: dict) -> bool:
    """Does a ValueError's message name a number, an argument to change, a remedy or one of the languages?"""
    if re.search(r"\d", msg) or any(w in msg for w in ("n_way", "k_shot", "q_query", "lower", "reduce", "more")):
        return True
    return any(re.search(rf"(?<![\w-]){re.escape(lang)}(?![\w-])", msg) for lang in data)


def language_episode(student: Callable) -> Callable:
    """Exercise 9.2: an N-way K-shot episode from sentences."""
    return run_check("9.2", "an episode of sentences", student, reference_language_episode, _probe_episode)


# ----------------------------------------------------------------------------- 9.3

GAP_RULE = ("gap = mean(acc_train) - mean(acc_held_out); half_width = 1.96 * sqrt(s_1^2 / n_1 + s_2^2 / n_2) "
            "with s_i the sample standard deviations (unbiased, n - 1) of the per-episode accuracies.")

GAP_MISTAKES = {
    "sign": ("the sign is reversed: the gap is mean(acc_train) - mean(acc_held_out), positive when the "
             "meta-learner does better on its training languages (meta-overfitting)."),
    "no_sqrt_n": ("the interval uses the standard deviations of the episodes, not the standard errors of the "
                  "means: divide each variance by its number of episodes, sqrt(s_1^2/n_1 + s_2^2/n_2)."),
    "added": ("the two half-widths are added (1.96 s_1/sqrt(n_1) + 1.96 s_2/sqrt(n_2)): for independent "
              "means the variances add, not the standard errors: 1.96 * sqrt(s_1^2/n_1 + s_2^2/n_2)."),
    "population": ("the standard deviations divide by n (population), not n - 1 (sample): use "
                   "unbiased=True / correction=1 (torch's default)."),
    "percent": "the result is in percent: keep accuracies as fractions, as they come in.",
    "z2": "the factor is 2 (or 1.645), not 1.96: the 95% normal quantile is 1.959964.",
    "z1": ("the half-width is missing the factor 1.96: sqrt(s_1^2/n_1 + s_2^2/n_2) is the standard error of "
           "the gap; the 95% half-width is 1.96 times it."),
    "full_width": ("this is the full width of the interval, twice the half-width (2 * 1.96 * the standard "
                   "error): return the half-width, 1.96 * sqrt(s_1^2/n_1 + s_2^2/n_2), so that the interval "
                   "is gap +- half_width."),
    "lists": "inputs may be lists: convert with torch.as_tensor(acc, dtype=torch.float64) first.",
    "paired": ("a paired difference (mean and std of acc_train - acc_held_out, episode by episode): the two "
               "sets are different languages and independent episodes, so no episode pairs with another. "
               + GAP_RULE),
    "pooled": ("the variances are divided by n_1 + n_2 together: each mean has its own standard error, "
               "s_i^2 / n_i."),
}


def _gap_variants(a: Tensor, b: Tensor) -> dict[str, tuple[float, float]]:
    g, h = reference_generalisation_gap(a, b)
    na, nb = len(a), len(b)
    va, vb = a.var().item(), b.var().item()
    pa, pb = a.var(unbiased=False).item(), b.var(unbiased=False).item()
    v = {"sign": (-g, h), "no_sqrt_n": (g, Z95 * math.sqrt(va + vb)),
         "added": (g, Z95 * (math.sqrt(va / na) + math.sqrt(vb / nb))),
         "population": (g, Z95 * math.sqrt(pa / na + pb / nb)), "percent": (100 * g, 100 * h),
         "z2": (g, 2 * h / Z95), "pooled": (g, Z95 * math.sqrt((va + vb) / (na + nb)))}
    m = min(na, nb)                       # a paired difference (on unequal sets: of the first m episodes)
    d = a[:m] - b[:m]
    v["paired"] = (d.mean().item(), Z95 * d.std().item() / math.sqrt(m))
    v["z1645"] = (g, 1.6448536269514722 * h / Z95)
    v["z1"] = (g, h / Z95)
    v["full_width"] = (g, 2 * h)
    return v


def _gap_calls() -> list[tuple[Tensor, Tensor, str]]:
    g = torch.Generator().manual_seed(9)
    a = (torch.rand(40, generator=g, dtype=torch.float64) * 0.3 + 0.7)
    b = (torch.rand(25, generator=g, dtype=torch.float64) * 0.6 + 0.2)
    c = (torch.rand(30, generator=g, dtype=torch.float64) * 0.5 + 0.4)
    d = (torch.rand(30, generator=g, dtype=torch.float64) * 0.5 + 0.3)
    return [(a, b, "40 training episodes, 25 held-out"), (c, d, "30 and 30 episodes"),
            (b, a, "the two swapped (25 and 40)")]


def _as_float(v: Any, what: str, desc: str) -> float:
    if isinstance(v, Tensor) and v.numel() == 1:
        return float(v.item())
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise Mistake(f"{what} ({desc}) should be a number (a float or a one-element tensor); it is {describe(v)}.")


def _probe_gap(fn: Callable) -> None:
    for a, b, desc in _gap_calls():
        for kind, (x, y) in (("tensors", (a.clone(), b.clone())), ("lists", (a.tolist(), b.tolist()))):
            try:
                out = fn(x, y)
            except AttributeError as e:
                if kind != "lists":
                    raise
                raise Mistake(f"generalisation_gap ({desc}, lists) raised AttributeError: {e}. "
                              f"{GAP_MISTAKES['lists']}") from None
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise Mistake(f"generalisation_gap ({desc}, {kind}) should return (gap, half_width); it returned "
                              f"{describe(out)}.")
            got = (_as_float(out[0], "gap", desc), _as_float(out[1], "half_width", desc))
            ref = reference_generalisation_gap(a, b)
            if all(math.isclose(u, v, rel_tol=1e-4, abs_tol=1e-9) for u, v in zip(got, ref)):
                continue
            for name, wrong in _gap_variants(a, b).items():
                if all(math.isclose(u, v, rel_tol=1e-4, abs_tol=1e-9) for u, v in zip(got, wrong)):
                    key = "z2" if name == "z1645" else name
                    raise Mistake(f"generalisation_gap ({desc}): wrong. It looks like {GAP_MISTAKES[key]}")
            raise Mistake(f"generalisation_gap ({desc}, {kind}): got (gap, half_width) = ({got[0]:.6f}, {got[1]:.6f}), "
                          f"expected ({ref[0]:.6f}, {ref[1]:.6f}).", GAP_RULE)


def generalisation_gap(student: Callable) -> Callable:
    """Exercise 9.3: the meta-generalisation gap with its 95% interval."""
    return run_check("9.3", "the generalisation gap", student, reference_generalisation_gap, _probe_gap)
