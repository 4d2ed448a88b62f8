"""Chapter 09's checks (few-shot language identification): right answers pass, each named mistake of the
n-gram featuriser, the episode of sentences and the generalisation gap gets its own message, stubs are
"not attempted", and the references agree with course_utils.text_data / course_utils.text.

The mistaken functions are written as a student would write them, independently of the check's variants."""
import math
import random
import zlib

import pytest
import torch

from course_utils import text, text_data
from course_utils.chapter_checks import ch09
from conftest import expect_stub_handling, message, status


# --- 9.1 n-gram counts ---------------------------------------------------------------------------------

def _grams(s, lo, hi):
    return [s[i:i + n] for n in range(lo, hi + 1) for i in range(len(s) - n + 1)]


def counts_right(sentences, n_min, n_max, n_buckets):
    out = torch.zeros(len(sentences), n_buckets)
    for i, s in enumerate(sentences):
        s = " " + " ".join(s.lower().split()) + " "
        for g in _grams(s, n_min, n_max):
            out[i, zlib.crc32(g.encode("utf-8")) % n_buckets] += 1
    return out


def counts_right_loop_order(sentences, n_min, n_max, n_buckets):  # right: positions outer, orders inner
    rows = []
    for s in sentences:
        s = " " + " ".join(s.lower().split()) + " "
        row = [0.0] * n_buckets
        for i in range(len(s)):
            for n in range(n_min, n_max + 1):
                if i + n <= len(s):
                    row[zlib.crc32(s[i:i + n].encode()) % n_buckets] += 1
        rows.append(row)
    return torch.tensor(rows)


def _make(pad=True, lower=True, h=lambda g: zlib.crc32(g.encode("utf-8")), hi_off=0, lo_one=False,
          presence=False, norm=None, spaces=True, per_word=False, width=None, as_bytes=False, lengths=None):
    def f(sentences, n_min, n_max, n_buckets):
        B = width or n_buckets
        out = torch.zeros(len(sentences), B)
        for i, s in enumerate(sentences):
            s = s.lower() if lower else s
            s = " ".join(s.split()) if spaces else s
            pieces = [" " + w + " " for w in s.split()] if per_word else [(" " + s + " ") if pad else s]
            for p in pieces:
                if as_bytes:
                    p = p.encode("utf-8")
                for g in _grams(p, *(lengths or (1 if lo_one else n_min, n_max - hi_off))):
                    b = (zlib.crc32(g) if as_bytes else h(g)) % B
                    out[i, b] = 1 if presence else out[i, b] + 1
        if norm == "l2":
            out = out / out.norm(dim=1, keepdim=True)
        if norm == "l1":
            out = out / out.sum(dim=1, keepdim=True)
        return out
    return f


COUNT_WRONG = {
    "python_hash": (_make(h=hash), "salted per process"),
    "no_padding": (_make(pad=False), "no boundary spaces"),
    "no_lower": (_make(lower=False), "the case is kept"),
    "off_by_one": (_make(hi_off=1), "n_max is left out"),
    "n_min_ignored": (_make(lo_one=True), "n_min is ignored"),
    "fixed_lengths": (_make(lengths=(1, 3)), "n_min and n_max are ignored: the lengths look fixed at 1..3"),
    "presence": (_make(presence=True), "presence instead of counts"),
    "l2": (_make(norm="l2"), "scaled to unit length"),
    "l1": (_make(norm="l1"), "divided by its total"),
    "bytes": (_make(as_bytes=True), "UTF-8 bytes"),
    "spaces": (_make(spaces=False), "white space is not normalised"),
    "per_word": (_make(per_word=True), "each word is padded on its own"),
    "fixed_width": (_make(width=64), "n_buckets is ignored"),
    "adler": (_make(h=lambda g: zlib.adler32(g.encode())), "bucket"),
    "list": (lambda s, a, b, n: counts_right(s, a, b, n).tolist(), "should return a torch.Tensor"),
    "int": (lambda s, a, b, n: counts_right(s, a, b, n).long(), "return floats"),
}


@pytest.mark.parametrize("fn", [counts_right, counts_right_loop_order, ch09.reference_ngram_counts])
def test_ngram_counts_right(fn):
    assert ch09.ngram_counts(fn) is fn and status("9.1") == "right"


@pytest.mark.parametrize("name", sorted(COUNT_WRONG))
def test_ngram_counts_mistakes_named(name):
    fn, phrase = COUNT_WRONG[name]
    assert ch09.ngram_counts(fn) is ch09.reference_ngram_counts
    assert status("9.1") == "wrong" and phrase in message("9.1"), message("9.1")


def test_ngram_counts_every_named_mistake_has_a_student_version():
    named = {k for k in ch09.COUNT_MISTAKES}
    assert named <= set(COUNT_WRONG), named - set(COUNT_WRONG)


def test_ngram_counts_reference_matches_the_featuriser():
    sents = ch09.SENTENCES + text_data.sample_sentences("de", 5)
    for lo, hi, b in ((1, 3, 4096), (2, 4, 97)):
        f = text_data.NGramFeaturizer(lo, hi, b, norm=None)
        assert torch.equal(ch09.reference_ngram_counts(sents, lo, hi, b), f(sents))


def test_ngram_counts_stub(monkeypatch):
    expect_stub_handling(ch09.ngram_counts, "9.1", ch09.reference_ngram_counts, COUNT_WRONG["no_padding"][0],
                         monkeypatch)


# --- 9.2 the episode of sentences ----------------------------------------------------------------------

def episode_right(sentences, n_way, k_shot, q_query, generator):
    names = list(sentences)
    if len(names) < n_way:
        raise ValueError(f"a {n_way}-way episode needs {n_way} languages; there are {len(names)}")
    for n in names:
        if len(sentences[n]) < k_shot + q_query:
            raise ValueError(f"{n}: too few sentences; lower k_shot or q_query")
    langs = [names[i] for i in torch.randperm(len(names), generator=generator)[:n_way]]
    s, q = [], []
    for lang in langs:
        idx = torch.randperm(len(sentences[lang]), generator=generator)[:k_shot + q_query]
        s += [sentences[lang][i] for i in idx[:k_shot]]
        q += [sentences[lang][i] for i in idx[k_shot:]]
    y = torch.arange(n_way)
    return s, y.repeat_interleave(k_shot), q, y.repeat_interleave(q_query), langs


def episode_right_torch_only_chosen(sentences, n_way, k_shot, q_query, generator):
    """Right: checks only the chosen languages, draws with a random permutation per language, tuples."""
    names = sorted(sentences)
    if n_way > len(names):
        raise ValueError("too few languages for n_way")
    order = torch.randperm(len(names), generator=generator).tolist()[:n_way]
    langs = [names[i] for i in order]
    s, q = [], []
    for lang in langs:
        if len(sentences[lang]) < k_shot + q_query:
            raise ValueError(f"{lang} has too few sentences")
        perm = torch.randperm(len(sentences[lang]), generator=generator).tolist()
        s.extend(sentences[lang][i] for i in perm[:k_shot])
        q.extend(sentences[lang][i] for i in perm[k_shot:k_shot + q_query])
    return (s, torch.arange(n_way).repeat_interleave(k_shot), q,
            torch.arange(n_way).repeat_interleave(q_query), langs)


def _episode_variant(kind):
    def f(sentences, n_way, k_shot, q_query, generator):
        names = list(sentences)
        if kind != "no_raise":
            if len(names) < n_way or any(len(v) < k_shot + q_query for v in sentences.values()):
                raise ValueError("bad" if kind == "vague" else "too few; lower n_way, k_shot or q_query")
        if kind == "swapped":
            k_shot, q_query = q_query, k_shot
        if kind == "global_rng":
            order = torch.randperm(len(names))[:n_way].tolist()
        elif kind == "fixed":
            generator = torch.Generator().manual_seed(0)          # a fresh generator: the argument is ignored
            order = torch.randperm(len(names), generator=generator)[:n_way].tolist()
        elif kind == "same":
            order = list(range(n_way))
        elif kind == "dict_order":
            order = sorted(torch.randperm(len(names), generator=generator)[:n_way].tolist())
        elif kind == "repeat":
            order = torch.randint(len(names), (n_way,), generator=generator).tolist()
            order[-1] = order[0]
        else:
            order = torch.randperm(len(names), generator=generator)[:n_way].tolist()
        langs = [names[i] for i in order]
        s, q, ys, yq = [], [], [], []
        for c, lang in enumerate(langs):
            m = len(sentences[lang])
            g = None if kind == "global_rng" else generator
            if kind == "replacement":
                idx = torch.randint(m, (k_shot + q_query,), generator=g).tolist()
            elif kind == "first":
                idx = list(range(k_shot + q_query))
            else:
                idx = torch.randperm(m, generator=g)[:k_shot + q_query].tolist()
            sup = idx[:k_shot]
            qry = idx[:q_query] if kind == "overlap" else idx[k_shot:k_shot + q_query]
            s += [sentences[lang][i] for i in sup]
            q += [sentences[lang][i] for i in qry]
            label = order[c] if kind == "dict_index" else c
            ys += [label] * k_shot
            yq += [label] * q_query
        ys, yq = torch.tensor(ys), torch.tensor(yq)
        if kind == "interleaved":
            n = len(langs)
            perm = torch.arange(n * k_shot).view(n, k_shot).T.flatten()
            s, ys = [s[i] for i in perm], ys[perm]
        if kind == "not_long":
            ys, yq = ys.float(), yq.float()
        if kind == "mismatch":
            langs = langs[1:] + langs[:1]
        return s, ys, q, yq, langs
    return f


EPISODE_WRONG = {k: (_episode_variant(k), phrase) for k, phrase in {
    "swapped": "k_shot and q_query are swapped",
    "interleaved": "not class-major",
    "dict_index": "positions in the dict",
    "not_long": "not torch.long",
    "mismatch": "does not match `languages`",
    "overlap": "share a sentence",
    "replacement": "with replacement",
    "global_rng": "seeded alike give different episodes",
    "fixed": "different seeds give the same episode",
    "same": "the same languages",
    "dict_order": "dict's order",
    "repeat": "appears twice",
    "no_raise": "no ValueError",
    "first": "the sentences are always the first K + Q of each list: draw them at random with "
             "torch.randperm(..., generator=generator)",
    "vague": "the ValueError should say what is wrong and what to do",
}.items()}


@pytest.mark.parametrize("msg", ["ja has only 3 sentences", "lower k_shot", "need 8 languages, got 7",
                                 "n_way is larger than the number of languages"])
def test_language_episode_helpful_errors_pass(msg):
    def f(sentences, n_way, k_shot, q_query, generator):
        if n_way > len(sentences) or any(len(v) < k_shot + q_query for v in sentences.values()):
            raise ValueError(msg)
        return episode_right(sentences, n_way, k_shot, q_query, generator)
    ch09.language_episode(f)
    assert status("9.2") == "right", message("9.2")


@pytest.mark.parametrize("msg", ["bad", "too few", "not enough"])
def test_language_episode_vague_errors_named(msg):
    def f(sentences, n_way, k_shot, q_query, generator):
        if n_way > len(sentences) or any(len(v) < k_shot + q_query for v in sentences.values()):
            raise ValueError(msg)
        return episode_right(sentences, n_way, k_shot, q_query, generator)
    ch09.language_episode(f)
    assert status("9.2") == "wrong" and "the ValueError should say what is wrong and what to do" in message("9.2")


def test_language_episode_fixed_sentences_not_first_are_caught():
    def last(sentences, n_way, k_shot, q_query, generator):   # random languages, always the last K + Q sentences
        names = list(sentences)
        if n_way > len(names) or any(len(v) < k_shot + q_query for v in sentences.values()):
            raise ValueError("too few; lower k_shot")
        langs = [names[i] for i in torch.randperm(len(names), generator=generator)[:n_way]]
        s, q = [], []
        for lang in langs:
            pick = sentences[lang][-(k_shot + q_query):]
            s += pick[:k_shot]
            q += pick[k_shot:]
        y = torch.arange(n_way)
        return s, y.repeat_interleave(k_shot), q, y.repeat_interleave(q_query), langs
    ch09.language_episode(last)
    assert status("9.2") == "wrong" and "whatever the generator's seed" in message("9.2"), message("9.2")


def test_language_episode_every_named_mistake_has_a_student_version():
    covered = {"swapped", "interleaved", "dict_index", "not_long", "mismatch", "overlap", "replacement",
               "global_rng", "fixed", "dict_order", "too_few", "first_sentences", "vague_error",
               "same_languages", "repeated_language", "shuffled"}
    assert set(ch09.EPISODE_MISTAKES) <= covered, set(ch09.EPISODE_MISTAKES) - covered


@pytest.mark.parametrize("fn", [episode_right, episode_right_torch_only_chosen, ch09.reference_language_episode])
def test_language_episode_right(fn):
    assert ch09.language_episode(fn) is fn, message("9.2")
    assert status("9.2") == "right"


@pytest.mark.parametrize("name", sorted(EPISODE_WRONG))
def test_language_episode_mistakes_named(name):
    fn, phrase = EPISODE_WRONG[name]
    assert ch09.language_episode(fn) is ch09.reference_language_episode
    assert status("9.2") == "wrong" and phrase in message("9.2"), message("9.2")


def test_language_episode_python_random_is_the_generator_ignored():
    def with_random(sentences, n_way, k_shot, q_query, generator):
        names = list(sentences)
        if n_way > len(names) or any(len(v) < k_shot + q_query for v in sentences.values()):
            raise ValueError("too few")
        langs = random.sample(names, n_way)
        s, q = [], []
        for lang in langs:
            idx = random.sample(range(len(sentences[lang])), k_shot + q_query)
            s += [sentences[lang][i] for i in idx[:k_shot]]
            q += [sentences[lang][i] for i in idx[k_shot:]]
        y = torch.arange(n_way)
        return s, y.repeat_interleave(k_shot), q, y.repeat_interleave(q_query), langs
    ch09.language_episode(with_random)
    assert status("9.2") == "wrong" and "generator is ignored" in message("9.2")


def test_language_episode_stub(monkeypatch):
    expect_stub_handling(ch09.language_episode, "9.2", ch09.reference_language_episode,
                         EPISODE_WRONG["overlap"][0], monkeypatch)


# --- 9.3 the generalisation gap -------------------------------------------------------------------------

def gap_right(acc_train, acc_held_out):
    a, b = torch.as_tensor(acc_train, dtype=torch.float64), torch.as_tensor(acc_held_out, dtype=torch.float64)
    return (a.mean() - b.mean()).item(), 1.96 * math.sqrt(a.var() / len(a) + b.var() / len(b))


def gap_right_python(acc_train, acc_held_out):
    a, b = [float(v) for v in acc_train], [float(v) for v in acc_held_out]
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((v - ma) ** 2 for v in a) / (len(a) - 1)
    vb = sum((v - mb) ** 2 for v in b) / (len(b) - 1)
    return torch.tensor(ma - mb), 1.959964 * (va / len(a) + vb / len(b)) ** 0.5


def _gap(kind):
    def f(acc_train, acc_held_out):
        a, b = torch.as_tensor(acc_train, dtype=torch.float64), torch.as_tensor(acc_held_out, dtype=torch.float64)
        g = (a.mean() - b.mean()).item()
        va, vb = a.var().item(), b.var().item()
        h = 1.959964 * math.sqrt(va / len(a) + vb / len(b))
        if kind == "sign":
            g = -g
        if kind == "no_sqrt_n":
            h = 1.959964 * math.sqrt(va + vb)
        if kind == "added":
            h = 1.959964 * (math.sqrt(va / len(a)) + math.sqrt(vb / len(b)))
        if kind == "population":
            h = 1.959964 * math.sqrt(a.var(unbiased=False).item() / len(a) + b.var(unbiased=False).item() / len(b))
        if kind == "percent":
            g, h = 100 * g, 100 * h
        if kind == "z2":
            h = 2 * math.sqrt(va / len(a) + vb / len(b))
        if kind == "z1":
            h = math.sqrt(va / len(a) + vb / len(b))
        if kind == "full_width":
            h = 2 * 1.959964 * math.sqrt(va / len(a) + vb / len(b))
        if kind == "paired":
            d = a[: len(b)] - b[: len(a)]
            g, h = d.mean().item(), 1.959964 * d.std().item() / math.sqrt(len(d))
        if kind == "pooled":
            h = 1.959964 * math.sqrt((va + vb) / (len(a) + len(b)))
        if kind == "single":
            return g
        return g, h
    return f


GAP_WRONG = {k: (_gap(k), p) for k, p in {
    "sign": "sign is reversed", "no_sqrt_n": "not the standard errors", "added": "half-widths are added",
    "population": "divide by n (population)", "percent": "in percent", "z2": "the factor is 2",
    "paired": "paired difference", "pooled": "n_1 + n_2", "single": "should return (gap, half_width)",
    "z1": "the half-width is missing the factor 1.96",
    "full_width": "this is the full width of the interval, twice the half-width"}.items()}


def gap_tensor_methods(acc_train, acc_held_out):   # right on tensors, AttributeError on lists
    a, b = acc_train.double(), acc_held_out.double()
    return (a.mean() - b.mean()).item(), 1.96 * math.sqrt(a.var() / len(a) + b.var() / len(b))


GAP_WRONG["lists"] = (gap_tensor_methods, "inputs may be lists: convert with torch.as_tensor")


def test_gap_every_named_mistake_has_a_student_version():
    assert set(ch09.GAP_MISTAKES) <= set(GAP_WRONG), set(ch09.GAP_MISTAKES) - set(GAP_WRONG)


@pytest.mark.parametrize("fn", [gap_right, gap_right_python, ch09.reference_generalisation_gap,
                                text.generalisation_gap])
def test_gap_right(fn):
    assert ch09.generalisation_gap(fn) is fn, message("9.3")


@pytest.mark.parametrize("name", sorted(GAP_WRONG))
def test_gap_mistakes_named(name):
    fn, phrase = GAP_WRONG[name]
    assert ch09.generalisation_gap(fn) is ch09.reference_generalisation_gap
    assert status("9.3") == "wrong" and phrase in message("9.3"), message("9.3")


def test_gap_stub(monkeypatch):
    expect_stub_handling(ch09.generalisation_gap, "9.3", ch09.reference_generalisation_gap,
                         GAP_WRONG["sign"][0], monkeypatch)
