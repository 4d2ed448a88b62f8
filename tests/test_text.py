"""course_utils.text_data and course_utils.text: hand-computed n-gram features, determinism across
processes, language splits, bad inputs, and a tiny meta-training run that beats chance."""
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from course_utils import text, text_data as T
from course_utils.episodes import sample_episode
from course_utils.evaluation import mean_ci95

ROOT = Path(__file__).resolve().parents[1]


# --- featuriser ------------------------------------------------------------------------------------------

def test_sentence_ngrams_by_hand():
    # "Ab  c" -> " ab c ": 6 unigrams, 5 bigrams
    assert T.sentence_ngrams("Ab  c", 1, 2) == [" ", "a", "b", " ", "c", " ", " a", "ab", "b ", " c", "c "]
    assert T.sentence_ngrams("xy", 3, 3) == [" xy", "xy "]
    assert T.sentence_ngrams("été", 2, 2) == [" é", "ét", "té", "é "]     # characters, not bytes


def test_counts_by_hand():
    f = T.NGramFeaturizer(1, 2, 1 << 20, norm=None)      # a big table: no collisions among these grams
    x = f.counts(["aa"])                                  # " aa ": ' ' x2, 'a' x2, ' a', 'aa', 'a '
    nz = {int(b): float(x[0, b]) for b in x[0].nonzero().flatten()}
    expect = {}
    for g, c in ((" ", 2), ("a", 2), (" a", 1), ("aa", 1), ("a ", 1)):
        expect[zlib.crc32(g.encode()) % (1 << 20)] = float(c)
    assert nz == expect
    assert x.sum().item() == 7 and x.dtype == torch.float32


def test_collisions_add_up_with_one_bucket():
    f = T.NGramFeaturizer(1, 3, 1, norm=None)
    assert f.counts(["abc"]).item() == 5 + 4 + 3       # " abc " has 5 + 4 + 3 n-grams, all in bucket 0


def test_norms():
    x = T.NGramFeaturizer(1, 3, 64, "l2")(["hello world", "x"])
    assert torch.allclose(x.norm(dim=1), torch.ones(2))
    y = T.NGramFeaturizer(1, 3, 64, "l1")(["hello world"])
    assert abs(y.sum().item() - 1) < 1e-6


def test_featurizer_repr_names_its_settings():
    assert repr(T.NGramFeaturizer(2, 4, 512, "l1")) == "NGramFeaturizer(n_min=2, n_max=4, n_buckets=512, norm='l1', sqrt=False)"


_CHILD = ("import json, torch; from course_utils import text_data as T; "
          "s = T.sample_sentences('fr', 4, seed=3) + ['Zürich ist schön', 'в Москве']; "
          "x = T.NGramFeaturizer(1, 3, 257)(s); print(json.dumps([s, x.tolist()]))")


def test_features_identical_across_processes():
    outs = []
    for seed in ("1", "2"):                     # different string-hash salts in the two processes
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120, check=True)
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1]
    here = T.NGramFeaturizer(1, 3, 257)(outs[0][0])
    assert torch.allclose(here, torch.tensor(outs[0][1]))


# --- data ------------------------------------------------------------------------------------------------

def test_every_language_loads_and_sampling_is_seeded():
    assert len(T.LANGUAGES) == 42
    import wordfreq
    assert set(T.LANGUAGES) == set(wordfreq.available_languages(wordlist="small"))
    words, p = T.word_distribution("en", 100)
    assert len(words) == 100 and abs(p.sum().item() - 1) < 1e-9 and words[0] == "the"
    a = T.sample_sentences("de", 5, 4, seed=1)
    assert a == T.sample_sentences("de", 5, 4, seed=1) != T.sample_sentences("de", 5, 4, seed=2)
    assert all(len(s.split()) == 4 for s in a)
    assert T.sample_sentences("de", 3, seed=0) != T.sample_sentences("nl", 3, seed=0)


def test_language_table():
    assert T.language_table(["pt", "uk"]) == [("pt", "Portuguese", "Latin", "Romance"),
                                               ("uk", "Ukrainian", "Cyrillic", "Slavic")]


def test_splits_are_disjoint_and_cover():
    for seed in range(3):
        tr, te = T.random_language_split(14, seed)
        assert len(te) == 14 and not set(tr) & set(te) and set(tr) | set(te) == set(T.LANGUAGES)
    tr, te = T.hard_language_split()
    assert not set(tr) & set(te) and set(te) == set(T.HARD_HELD_OUT)
    for c in te:   # every held-out language has a sibling of the same script and family in training
        assert any(T.LANGUAGES[t][1:] == T.LANGUAGES[c][1:] for t in tr)
    a, b = T.split_class_sets(tr, te, n_sentences=5)
    assert not {T.code_of(n) for n in a.names} & {T.code_of(n) for n in b.names}
    with pytest.raises(ValueError, match="overlap"):
        T.check_language_split(["en", "fr"], ["fr"])


def test_class_set_episode_of_sentences():
    cs = T.language_class_set(["en", "fr", "de", "ru", "ja", "el"], 12, featurizer=T.NGramFeaturizer(1, 3, 128))
    ep = sample_episode(cs, 5, 2, 3, torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (10, 128) and ep.query_x.shape == (15, 128)
    assert cs.names[0] == "Latin/Germanic/en" and cs.alphabets[3] == "Cyrillic"


@pytest.mark.parametrize("call, match", [
    (lambda: T.sample_sentences("xx", 3), "Unknown language 'xx'"),
    (lambda: T.sample_sentences(3, 3), "wordfreq code"),
    (lambda: T.sample_sentences("en", 0), "n_sentences must be an integer >= 1"),
    (lambda: T.NGramFeaturizer(3, 2), "n_max must be an integer >= 3"),
    (lambda: T.NGramFeaturizer(norm="l3"), "norm must be"),
    (lambda: T.NGramFeaturizer()("one sentence"), "list of sentences"),
    (lambda: T.NGramFeaturizer()(["ok", 3]), "must be a str"),
    (lambda: T.language_class_set(["en", "en"]), "appear once"),
    (lambda: T.random_language_split(42), "leaves no meta-training language"),
    (lambda: T.hard_language_split(["ja"]), "share script and family with no training"),
    (lambda: text.make_encoder("cnn", 16), "Unknown encoder"),
    (lambda: text.generalisation_gap([0.5], [0.5, 0.6]), "at least 2"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_too_few_sentences_for_an_episode():
    cs = T.language_class_set(["en", "fr", "de", "ru", "ja"], 4, featurizer=T.NGramFeaturizer(1, 2, 32))
    with pytest.raises(ValueError, match="Lower k_shot or q_query"):
        sample_episode(cs, 5, 2, 3)


def test_training_needs_featurised_sets():
    cs = T.language_class_set(["en", "fr", "de", "ru", "ja"], 4)
    with pytest.raises(ValueError, match="featurised"):
        text.train_protonet("x", text.make_encoder("weights", 4096), cs)


# --- learning --------------------------------------------------------------------------------------------

def test_tiny_protonet_and_maml_head_beat_chance():
    f = T.NGramFeaturizer(1, 3, 512)
    tr, te = T.split_class_sets(*T.random_language_split(10, 0), n_sentences=20, featurizer=f)
    tr, te = tr.featurised(), te.featurised()
    model, hist = text.train_protonet("test-tiny", text.make_encoder("weights", 512), tr, 5, 2, 5, steps=30)
    acc = mean_ci95(text.protonet_accuracies(model.encoder, te, 5, 2, 5, 40, seed=1))
    assert acc.mean > 0.5                                          # chance 0.2
    maml = text.train_maml_head("test-tiny-maml", tr, 5, 2, 5, steps=5, batch=2, alpha=5.0)
    from course_utils.evaluation import evaluate
    assert evaluate(maml.classify, te, 5, 2, 5, 20, seed=1).mean > 0.4
    gap, half = text.generalisation_gap(torch.full((10,), 0.9) + torch.linspace(0, 0.05, 10), [0.5, 0.6, 0.7])
    assert gap > 0 and half > 0


def test_encoders_shapes_and_sizes():
    x = torch.rand(3, 256)
    for kind, size, n in (("weights", 1, 256), ("linear", 8, 256 * 8), ("mlp", 16, 256 * 16 + 16 + 16 * 64 + 64)):
        enc = text.make_encoder(kind, 256, size)
        assert text.n_parameters(enc) == n
        assert enc(x).shape[0] == 3


def test_benchmark_quick_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "text_fewshot.py"), "--toy", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "COURSE_QUIET": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "text_fewshot.json").read_text())
    assert data["baseline"] and (tmp_path / "text_fewshot.md").exists()


def test_square_rooted_counts_by_hand():
    # "aa": " aa " has unigrams ' ' x2, 'a' x2; bigrams ' a', 'aa', 'a '; trigrams ' aa', 'aa '. With enough
    # buckets and no collision the square-rooted profile is sqrt(2), sqrt(2), then five ones, scaled to unit length.
    f = T.NGramFeaturizer(1, 3, 1 << 16, None, sqrt=True)
    x = f(["aa"])[0]
    assert sorted(x[x > 0].tolist(), reverse=True) == pytest.approx([2 ** 0.5] * 2 + [1.0] * 5)
    y = T.NGramFeaturizer(1, 3, 1 << 16, "l2", sqrt=True)(["aa"])[0]
    assert torch.allclose(y, x / x.norm()) and "sqrt=True" in repr(T.NGramFeaturizer(sqrt=True))
