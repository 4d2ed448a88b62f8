"""Writes solutions/07_autolabel.ipynb from the cells below (a one-off authoring aid, kept so the
chapter's source can be diffed as text). Run: .venv/bin/python benchmarks/_build07.py"""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS: list[tuple[str, str]] = []


def md(s: str) -> None:
    CELLS.append(("md", s.strip("\n")))


def code(s: str) -> None:
    CELLS.append(("code", s.strip("\n")))


md(r"""
# 07 · Automatic labelling: from a few labels to a labelled data set

Chapter 00 opened with the **labelling bottleneck**: a new alphabet, a new product line, a new species,
and nobody has labelled it. This chapter pays that off. A person labels $K$ images of each new class;
a Prototypical network meta-trained on *other* alphabets (chapter 02) proposes labels for everything
else; confident proposals are **accepted**, doubtful ones go to the **human**, and the unlabelled
images themselves make the model better (**self-training**). At the end you can point the same
machinery at a folder of your own images with one command, `course-autolabel`.

**What you will learn**
- how sure a few-shot model is: **max-probability, margin and distance** confidences, and whether its
  probabilities mean what they say (**calibration**, ECE, **temperature scaling** fitted on
  meta-validation episodes);
- to **accept or ask**: a threshold $\tau$ for a target precision (99%), chosen on meta-validation and
  applied to a new alphabet, with its precision-coverage curve; how far the promise carries;
- **semi-supervised prototypes** (Ren et al., 2018): soft k-means over the unlabelled pool, and a
  masked variant that resists **distractors** (images of classes nobody labelled);
- **self-training** rounds with the drift controls of Li et al. (2019): class-balanced selection and
  re-anchoring on the human labels; what happens without them;
- a **human in the loop**: which item to ask about next (random, least margin, entropy, k-center), a
  labelling widget, and how many clicks meta-learning saves against two baselines without it;
- an **audit** of the final labels with cleanlab, and the **command-line tool**.

**Exercises:** 7.1 confidence and acceptance at a threshold · 7.2 a threshold for a target precision ·
7.3 one soft k-means step · 7.4 class-balanced selection · 7.5 one re-anchored self-training round.
Each is followed by a check cell: ✅ right, ⭕ not attempted (the chapter carries on with a reference
implementation), or ❌ wrong with the reason.

**Prerequisites:** chapter 00 (episodes, the 95% interval), chapter 02 (Prototypical networks).
**Time:** about 75 minutes. The notebook runs top to bottom in about 3 minutes on a laptop CPU (it
meta-trains its embedding the first time, then loads it from the cache).
""")

md("## 1 · Set-up")

code(r"""
%matplotlib inline
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import display

from course_utils import (budget, checks, confidence, label_audit, labelling, labelling_study as study,
                          plots, selective, self_training, soft_kmeans)
from course_utils.chapter_checks import ch07 as check
from course_utils.devices import describe_device, pick_device, seed_everything
from course_utils.evaluation import mean_ci95
from course_utils.labelling_data import (NONE, embed_classes, labelling_data, pool_images,
                                         pretrained_encoder, sample_pool, save_encoder)
from course_utils.plots import COLORS
from course_utils.protonet import protonet_logits, prototypes

T0 = time.perf_counter()
device = pick_device()
generator = seed_everything(0)
N_POOLS = budget.pick(quick=300, full=1000, smoke=20)   # labelling problems per measurement
print(f"device: {describe_device(device)} · budget: {budget.current()}")
data = labelling_data()
print(data.note)
print(data)
""")

md(r"""
**The data.** The embedding is meta-trained on the *background* alphabets (rotated by 90° steps into
extra classes, as in chapter 02). A slice of background characters it never trains on is
**meta-validation**: classes with known labels, where we are allowed to tune temperatures, thresholds
and radii. The **new alphabets** are the *evaluation* set: alphabets the embedding has never seen. They
play the person's data set: their labels are hidden from every method and used only to score it.

The embedding $f_\theta$ is chapter 02's Prototypical network (Conv-4, 20-way 1-shot episodes),
trained here on first use and cached by its full configuration. Every image is embedded **once**:
everything in this chapter works on the vectors $z = f_\theta(x)$, which is why it is fast.
""")

code(r"""
encoder = pretrained_encoder(data, device)
VAL = embed_classes(encoder, data.val)     # meta-validation classes: labels known, tuning allowed
NEW = embed_classes(encoder, data.new)     # the new alphabets: labels hidden, only for scoring
print(f"{len(VAL)} meta-val classes and {len(NEW)} new classes, {VAL.x.shape[-1]}-d embeddings")
""")

md(r"""
## 2 · The labelling problem

One problem, a **pool**: $N$ new classes, $K$ labelled supports each (the human's first labels), and
$M$ unlabelled images of each class, shuffled together, sometimes with images of $H$ further classes
that nobody labelled (**distractors**: their right answer is "none of these").

| symbol | code | meaning |
|---|---|---|
| $N$, $K$ | `n_way`, `k_shot` | classes, and labelled supports per class |
| $M$, $H$, $P$ | `m_per_class`, `n_distractors`, `P` | unlabelled items per class, distractor classes, pool size |
| $z_i$, $\tilde z_j$ | `support_z[i]`, `pool_z[j]` | embeddings of a support and of a pool item |
| $c_n$ | `c[n]` | prototype of class $n$: the mean of its supports (chapter 02) |
| $d_{jn}$ | `d[j, n]` | $\lVert \tilde z_j - c_n \rVert^2$, and `logits = -d` |
| $p_{jn}$ | `p[j, n]` | $\mathrm{softmax}_n(-d_{jn} / \kappa)$, the probability that item $j$ is class $n$ |
| $\kappa$ | `temperature` | the softmax temperature (§4; the course keeps $T$ for inner steps) |
| $\tau$ | `tau` | the acceptance threshold (§5) |
| $w_{jn}$, $r$ | `w`, `radius` | soft assignments and mask radius of soft k-means (§6) |
| $Z$ | `z_per_class` | pseudo-labels accepted per class per round (§7) |

A pool is this chapter's episode: every measurement below samples many pools and reports a mean with
its 95% interval over them (printed as "episodes"). Here is one pool from the new alphabets: 5
classes, 1 label each, 8 unlabelled images each, and 2 distractor classes.
""")

code(r"""
demo = sample_pool(NEW, n_way=5, k_shot=1, m_per_class=8, n_distractors=2, generator=generator)
support_x, pool_x = pool_images(demo, data.new)
fig = study.plot_pool(support_x, pool_x, demo.pool_y, demo.classes,
                           title="One labelling problem: 5 labelled images (top), the pool to label (below)")
plt.show()
""")

md(r"""
## 3 · Propose: probabilities and confidence

The prototype classifier gives each pool item a distribution over the $N$ classes,

$$p_{jn} = \frac{\exp(-d_{jn}/\kappa)}{\sum_{n'} \exp(-d_{jn'}/\kappa)}, \qquad d_{jn} = \lVert \tilde z_j - c_n \rVert^2,$$

and the proposal $\hat y_j = \arg\max_n p_{jn}$. How sure is it? Three common answers:

- **max-probability** $\max_n p_{jn}$ (FixMatch's threshold $\tau = 0.95$ is on this);
- **margin** $p_{j(1)} - p_{j(2)}$, the best minus the second best: small when two classes compete;
- **distance** $-\min_n d_{jn}$: far from *every* prototype means "none of these look like it", which
  the softmax cannot say (it always sums to 1, even for a distractor).

We **accept** a proposal when its confidence reaches a threshold $\tau$, and send the rest to the human.
""")

md(r"""
### Exercise 7.1 · Confidence and acceptance at a threshold

Write `accept_at(logits, temperature, tau)`:
- `logits`: `(P, N)`, one row per pool item, one column per class ($-d_{jn}$);
- returns `(labels, confidence, accepted)`: the proposed class of each item `(P,)` (long), its
  max-probability confidence `(P,)` (float, from $p = \mathrm{softmax}(\text{logits}/\kappa)$), and a bool
  mask `(P,)` of the items with confidence $\geq \tau$.
""")

code(r"""
def accept_at(logits, temperature, tau):
    '''Proposals, max-probability confidence and the accepted mask (confidence >= tau).'''
    # Exercise 7.1: softmax(logits / temperature) over the classes, then the most probable class and its probability
    ### BEGIN SOLUTION
    p = torch.softmax(logits / temperature, dim=1)
    confidence, labels = p.max(dim=1)
    return labels, confidence, confidence >= tau
    ### END SOLUTION
""")

md(r"""
<details><summary>Hint 1 (idea)</summary>

Each **row** is one item; the probabilities of an item sum to one over the **classes**. Which axis is
that? Divide the logits by $\kappa$ *before* the softmax: a large $\kappa$ flattens the distribution.
</details>

<details><summary>Hint 2 (code)</summary>

`p = torch.softmax(logits / temperature, dim=1)`; `p.max(dim=1)` returns both the values (the
confidence) and the indices (the labels); the mask is `confidence >= tau`.
</details>
""")

code("accept_at = check.accept_at(accept_at)")

code(r"""
logits = study.pool_logits(demo)
labels, conf, accepted = accept_at(logits, 1.0, 0.9)
real = demo.pool_y != NONE
print(f"{int(accepted.sum())} of {len(conf)} pool items accepted at tau = 0.9; "
      f"{int((labels[accepted] == demo.pool_y[accepted]).sum())} of them right, "
      f"{int((accepted & ~real).sum())} distractors accepted (always wrong)")
""")

md(r"""
## 4 · Are the probabilities honest? Calibration

A threshold on probabilities only means something if the probabilities do: among items with
confidence 0.9, about 90% should be right. The **expected calibration error** (Guo et al., 2017) bins
the items by confidence into 15 equal-width bins $S_1, \dots, S_{15}$ and compares each bin's accuracy
with its mean confidence,

$$\mathrm{ECE} = \sum_{b=1}^{15} \frac{|S_b|}{P}\,\bigl|\mathrm{acc}(S_b) - \mathrm{conf}(S_b)\bigr|.$$

ProtoNet's logits are squared distances, whose scale comes from training, not from any promise
about probabilities. **Temperature scaling** fixes the scale with one number: choose $\kappa$ to minimise
the negative log-likelihood $-\sum_j \log p_{j y_j}(\kappa)$. On *which* items? Not on the support set: at
$K = 1$ a support *is* its prototype ($d = 0$), always right, so the fit would push $\kappa \to 0$ and
declare everything certain. We fit $\kappa$ on **meta-validation pools**, classes with known labels
that look like the new ones, and apply it unchanged to the new alphabets.
""")

code(r"""
VAL_POOLS = {k: study.sample_pools(VAL, 5, k, 15, N_POOLS, seed=1) for k in (1, 5)}
NEW_POOLS = {k: study.sample_pools(NEW, 5, k, 15, N_POOLS, seed=2) for k in (1, 5)}
CAL = {k: study.calibrate(VAL_POOLS[k], target=0.99) for k in (1, 5)}
for k in (1, 5):
    ece = study.calibration_errors(NEW_POOLS[k], CAL[k].temperature)
    b, a = ece["before"], ece["after"]
    print(f"K = {k}: κ = {CAL[k].temperature:.2f} (fitted on meta-val); ECE on the new alphabets "
          f"{100 * b.mean:.1f} ± {100 * b.ci95:.1f}% with κ = 1, {100 * a.mean:.1f} ± {100 * a.ci95:.1f}% with "
          f"the fitted κ (mean ± 95% over {b.n} blocks of 10 pools)")
logits1, y1 = study.stack_logits(NEW_POOLS[1])
fig = confidence.plot_reliability(confidence.probabilities(logits1, 1.0),
                                  confidence.probabilities(logits1, CAL[1].temperature), y1,
                                  labels=("κ = 1", f"κ = {CAL[1].temperature:.2f} (meta-val)"))
plt.show()
""")

md(r"""
Read the lines above as measurements, not promises. The temperature is fitted **per $K$**: a prototype
averaged from 5 supports sits closer to its class's items than a single support does, so the
distances, and the scale the softmax needs, change with $K$. The ECE after scaling says whether a
temperature chosen on the meta-validation alphabets also suits the new ones; where it does not improve,
the meta-validation classes' confidences were not a good model of the new alphabets' at that $K$.
The reliability diagram shows the same at $K = 1$: bars below the diagonal are overconfident bins.
Two ECE values, two sample sizes: the printed one is a mean over blocks of 10 pools (750 items each),
which gives an interval; the legend's is computed once over all items of all pools. ECE measured on few
items is biased upwards by sampling noise (even a perfectly calibrated model shows gaps in small bins),
so compare "before" with "after" at the same size, never across the two.
""")

md(r"""
## 5 · Accept or ask: a threshold for a target precision

Sort the items by confidence and accept from the top. **Coverage** is the share accepted; **precision**
the share of accepted labels that are right. Lowering $\tau$ raises coverage and (usually) lowers
precision: the **precision-coverage curve** (selective classification, Geifman & El-Yaniv, 2017).
A person who wants a data set with at most 1% wrong labels asks for the **smallest** $\tau$ whose
accepted set still has precision $\geq 99\%$, measured where the truth is known: on meta-validation.
A distractor accepted under any label counts as wrong.
""")

md(r"""
### Exercise 7.2 · A threshold for a target precision

Write `fit_threshold(pools, temperature, target)`:
- `pools`: a list of meta-validation `Pool`s (fields `support_z`, `support_y` (class-major), `pool_z`,
  `pool_y` with `NONE = -1` for distractors, `n_way`, `k_shot`);
- for every pool: prototypes from its supports, logits $-d$ of its **pool** items, max-probability
  confidence at temperature $\kappa$, and whether the proposal is right; then all pools' items together;
- returns the smallest confidence value $\tau$ among them whose accepted set $\{\text{conf} \geq \tau\}$
  has precision $\geq$ `target`; `float('inf')` if none has.
""")

code(r"""
def fit_threshold(pools, temperature, target):
    '''The smallest tau with precision >= target on the pools' items (all pools together).'''
    # Exercise 7.2: score every pool's items, pool them, then scan the thresholds from the top
    ### BEGIN SOLUTION
    conf, right = [], []
    for pool in pools:
        c = prototypes(pool.support_z, pool.n_way, pool.k_shot)
        p = torch.softmax(protonet_logits(pool.pool_z, c) / temperature, dim=1)
        best, guess = p.max(dim=1)
        conf.append(best)
        right.append(guess == pool.pool_y)
    conf, right = torch.cat(conf), torch.cat(right)
    order = torch.argsort(conf, descending=True)
    sorted_conf = conf[order]
    precision = right[order].double().cumsum(0) / torch.arange(1, len(conf) + 1, device=conf.device)
    run_end = torch.ones(len(conf), dtype=torch.bool, device=conf.device)   # equal confidences go together:
    run_end[:-1] = sorted_conf[:-1] > sorted_conf[1:]      # only the last item of a run is a cut point
    ok = ((precision >= target) & run_end).nonzero()
    if len(ok) == 0:
        return float("inf")
    return float(sorted_conf[int(ok.max())])   # the deepest cut that still reaches the target
    ### END SOLUTION
""")

md(r"""
<details><summary>Hint 1 (idea)</summary>

Sort the items by confidence, most confident first. Accepting the top $i$ items gives a precision:
the number right among them over $i$. You want the deepest $i$ whose precision is still $\geq$ the
target, and $\tau$ is the confidence of that item. Score the **pool** items, not the supports (why?
see §4), and keep the distractors: they are exactly the items a threshold must keep out.
</details>

<details><summary>Hint 2 (code)</summary>

`order = torch.argsort(conf, descending=True)`; `precision = right[order].double().cumsum(0) /
torch.arange(1, P + 1, device=conf.device)`; the indices where `precision >= target` are `(precision >= target).nonzero()`;
take the largest. Ties: items with the same confidence are all accepted or all rejected together, so
only the last position of a run of equal confidences is a possible cut
(`sorted_conf[:-1] > sorted_conf[1:]` marks them).
</details>
""")

code("fit_threshold = check.fit_threshold(fit_threshold)")

code(r"""
rows = []
for k in (1, 5):
    tau = fit_threshold(VAL_POOLS[k], CAL[k].temperature, 0.99)
    res = study.acceptance(NEW_POOLS[k], study.Calibration(CAL[k].temperature, tau, CAL[k].radius, 0.99))
    rows.append((k, tau, res))
    print(f"K = {k}: tau = {tau:.3f} from meta-val -> on the new alphabets coverage {res['coverage']}, "
          f"precision of the accepted labels {100 * res['precision_pooled']:.2f}% "
          f"(target 99%: gap {100 * res['gap']:+.2f} points; {N_POOLS} pools of 5 classes x 15 images)")
""")

md(r"""
Read the numbers: the coverage is how much of the pool the model labels on its own at this
precision (the interval is over pools). The gap says how well a threshold chosen on one set of classes carries to another: the
meta-validation classes come from the background alphabets, the new ones from other alphabets, and
nothing guarantees the same precision there. A positive gap means the threshold promised more than it
gave. The curves below show the whole trade-off on the new alphabets (5-way 1-shot) for the three
confidences; each dot marks the largest coverage at which that curve still has 99% precision *on these
very pools*: what an oracle, allowed to tune on the new alphabet's hidden labels, would get. These pools
hold no distractors, so the distance confidence has nothing to catch here and only adds noise; it earns
its place in §6 and in the tool. The last line measures the classic mistake, a threshold chosen **on the
support set**.
""")

code(r"""
T1 = CAL[1].temperature
logits1, y1 = study.stack_logits(NEW_POOLS[1])
right1 = logits1.argmax(1) == y1
curves = {kind: (confidence.confidence(logits1, kind, T1), right1) for kind in ("max_prob", "margin", "distance")}
fig = selective.plot_precision_coverage(curves, target=0.99)
plt.show()
support_tau = study.support_set_threshold(NEW_POOLS[1], T1, 0.99)
res = study.acceptance(NEW_POOLS[1], study.Calibration(T1, support_tau, CAL[1].radius, 0.99))
print(f"tau chosen on the support sets themselves: {support_tau:.3f}; precision on the pools "
      f"{100 * res['precision_pooled']:.1f}% at coverage {res['coverage']} (the supports were all 'right')")
""")

md(r"""
## 6 · Unlabelled images improve the prototypes: soft k-means

The pool is unlabelled, but not useless: its items cluster around the classes. Ren et al. (2018)
refine each prototype with a **soft k-means** step: every unlabelled item joins every class with its
soft assignment $w_{jn}$ (a softmax over classes of $-d_{jn}$), and the prototype becomes the weighted
mean of the supports and the pool,

$$\tilde c_n = \frac{\sum_i z_i\,[y_i = n] + \sum_j \tilde z_j\, w_{jn}\, m_{jn}}{\sum_i [y_i = n] + \sum_j w_{jn}\, m_{jn}},
\qquad w_{jn} = \frac{\exp(-\lVert \tilde z_j - c_n\rVert^2)}{\sum_{n'} \exp(-\lVert \tilde z_j - c_{n'}\rVert^2)}.$$

With $m_{jn} = 1$ it is plain soft k-means. A **distractor** still gets weights that sum to one over
the classes, so it drags some prototype towards itself. Ren et al.'s *masked* soft k-means learns a
mask $m_{jn}$ from distance statistics; the course uses a simpler, non-learned mask,
$m_{jn} = \sigma((r - d_{jn})/s)$: items farther than a radius $r$ from a prototype barely count for it.
The radius $r$ is the 99th percentile of the squared distances of meta-validation items to their own
class's prototype (`study.calibrate` picks it with the temperature), and the softness $s = r/10$; the
mask is measured once, from the support means. Ren et al. also *train* through the refinement; here it is applied at
test time only, on the supervised embedding (their "semi-supervised inference").
""")

md(r"""
### Exercise 7.3 · One soft k-means step

Write `soft_kmeans_step(c, support_z, support_y, z_unlabelled, mask=None)`:
- `c` `(N, D)`: the current prototypes, used **only** for the assignments $w$;
- `support_z` `(N*K, D)`, `support_y` `(N*K,)`: the labelled supports, **in any order** (use their
  labels, not their positions); `z_unlabelled` `(P, D)`: all $P$ unlabelled items of the pool;
- `mask`: `(P, N)` or `None` (all ones);
- returns the refined prototypes $\tilde c$ `(N, D)` of the equation above.
""")

code(r"""
def soft_kmeans_step(c, support_z, support_y, z_unlabelled, mask=None):
    '''Ren et al.'s refined prototypes: supports plus soft-assigned (and masked) unlabelled items.'''
    # Exercise 7.3: w from the distances to c; then weighted sums over supports and pool, per class
    ### BEGIN SOLUTION
    n_way = c.shape[0]
    d = (z_unlabelled[:, None, :] - c[None, :, :]).pow(2).sum(-1)      # (M, N)
    w = torch.softmax(-d, dim=1)
    if mask is not None:
        w = w * mask
    onehot = F.one_hot(support_y, n_way).to(c.dtype)                    # (N*K, N)
    total = onehot.T @ support_z + w.T @ z_unlabelled                  # (N, D)
    count = onehot.sum(0) + w.sum(0)                                    # (N,)
    return total / count[:, None]
    ### END SOLUTION
""")

md(r"""
<details><summary>Hint 1 (idea)</summary>

Two sums per class: the supports that carry its label (weight 1 each) and every pool item (weight
$w_{jn} m_{jn}$). Divide by the total weight of the class. The assignments are a softmax over the
**classes** of each item, from squared distances to the *current* prototypes `c`.
</details>

<details><summary>Hint 2 (code)</summary>

`d = (z_unlabelled[:, None] - c[None]).pow(2).sum(-1)` is `(M, N)`; `w = torch.softmax(-d, dim=1)`,
times the mask; `F.one_hot(support_y, N)` `(N*K, N)` turns the labels into weights, so
`onehot.T @ support_z + w.T @ z_unlabelled` is the numerator and `onehot.sum(0) + w.sum(0)` the
denominator.
</details>
""")

code("soft_kmeans_step = check.soft_kmeans_step(soft_kmeans_step)")

md(r"""
**Measured: accuracy against the number of unlabelled items.** The trend of Ren et al.'s Figure 4: the
more unlabelled items per class, the better the refined prototypes; distractors hurt plain soft
k-means more than the masked one. Each point is the accuracy on the pool's real-class items over many
pools (5-way 1-shot, $H = 5$ distractor classes of $M$ items each where marked). The same pools serve
every $M$: drawn once with 19 items per class and cut to the first $M$, so the lines differ only by $M$
(plain prototypes ignore the pool; their line moves only because the scored items change). Omniglot and
the glyph set have 20 images per character, so $M$ stops at 19 (Ren et al.'s figure goes to 25 on other
data). The refinement uses **your** `soft_kmeans_step` if its check passed.
""")

code(r"""
MS = budget.pick(quick=[1, 2, 5, 10, 19], full=[1, 2, 3, 5, 10, 15, 19], smoke=[1, 5])
n_m = budget.pick(quick=150, full=1000, smoke=10)
vs_m = {h: study.accuracy_vs_m(NEW, MS, 5, 1, n_m, radius=CAL[1].radius, n_distractors=h,
                               step=soft_kmeans_step) for h in (0, 5)}     # your 7.3 (or the reference)
fig = study.plot_accuracy_vs_m(vs_m, title="5-way 1-shot on the new alphabets: refining prototypes with the pool")
plt.show()
for h, res in vs_m.items():
    print(f"H = {h} distractor classes, M = {MS[-1]}: " + "; ".join(f"{name} {r[MS[-1]]}" for name, r in res.items()))
""")

md(r"""
## 7 · Self-training: the model labels, then learns from its own labels

Accepting confident proposals and adding them to the supports gives better prototypes, which make
more proposals confident, and so on (pseudo-labelling, Lee 2013; FixMatch's threshold, Sohn et al.
2020). The danger is **confirmation bias**: a wrong pseudo-label moves its prototype towards itself,
which makes similar wrong items look confident next round. Li et al. (2019, LST) control the drift
with two rules that this section copies:

1. **class-balanced selection**: at most $Z$ new labels per class per round, the most confident ones
   above $\tau$. Without it the easiest class takes every slot, and its prototype creeps outwards.
2. **re-anchoring on the human labels**: each round starts again from the human supports plus the
   current pseudo-labels, re-scores *every* item, and selects from scratch, so a pseudo-label that no
   longer looks right is dropped. An item is scored with prototypes that leave **itself** out: a
   pseudo-label never votes for its own confidence.
""")

md(r"""
### Exercise 7.4 · Class-balanced selection

Write `select_balanced(p, tau, z_per_class)`:
- `p`: `(P, N)` probabilities; `tau`: threshold on the max-probability; `z_per_class`: $Z$;
- returns `(idx, labels)`: for each class $n$, among the items whose most probable class is $n$ and
  whose max-probability is $\geq \tau$, the $Z$ most confident; `idx` (long) and their labels, pair by
  pair (any order; sorting `idx` keeps it tidy).
""")

code(r"""
def select_balanced(p, tau, z_per_class):
    '''At most z_per_class items per (argmax) class, the most confident ones with max p >= tau.'''
    # Exercise 7.4: per class, filter by argmax and tau, keep the top Z
    ### BEGIN SOLUTION
    conf, guess = p.max(dim=1)
    chosen = []
    for n in range(p.shape[1]):
        cand = ((guess == n) & (conf >= tau)).nonzero().flatten()
        top = cand[torch.argsort(conf[cand], descending=True, stable=True)[:z_per_class]]
        chosen.append(top)
    idx = torch.sort(torch.cat(chosen)).values
    return idx, guess[idx]
    ### END SOLUTION
""")

md(r"""
<details><summary>Hint 1 (idea)</summary>

Loop over the classes. An item is a candidate for class $n$ only if $n$ is its best guess *and* its
confidence reaches $\tau$. Among a class's candidates keep the $Z$ most confident. Then put the
classes' choices together.
</details>

<details><summary>Hint 2 (code)</summary>

`conf, guess = p.max(dim=1)`; for class `n`: `cand = ((guess == n) & (conf >= tau)).nonzero().flatten()`,
then `cand[torch.argsort(conf[cand], descending=True, stable=True)[:z_per_class]]`; finally
`torch.sort(torch.cat(...)).values` and `guess[idx]`.
</details>
""")

code("select_balanced = check.select_balanced(select_balanced)")

md(r"""
### Exercise 7.5 · One re-anchored self-training round

Write `self_training_round(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class)`:
- the prototypes are the means of each class's **human supports together with its current
  pseudo-supports** (`pool_z[pseudo_idx]` with labels `pseudo_y`; both may be empty in the first round);
- every pool item is scored with $p = \mathrm{softmax}(-d/\kappa)$; a pseudo-labelled item $j$ of class $n$
  is scored against $c_n^{(-j)} = (\text{sum}_n - \tilde z_j)/(\text{count}_n - 1)$ for its own class: the
  prototype without itself;
- returns a **new** selection `(idx, labels)` from scratch with your `select_balanced`: earlier
  pseudo-labels are not kept unless they are selected again.
""")

code(r"""
def self_training_round(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    '''Prototypes from human + pseudo labels, leave-one-out scores, a fresh class-balanced selection.'''
    # Exercise 7.5: sums and counts per class; remove each pseudo-support from its own class; select again
    ### BEGIN SOLUTION
    z = torch.cat([support_z, pool_z[pseudo_idx]])
    y = torch.cat([support_y, pseudo_y])
    onehot = F.one_hot(y, n_way).to(pool_z.dtype)
    total, count = onehot.T @ z, onehot.sum(0)                        # (N, D), (N,)
    d = (pool_z[:, None, :] - (total / count[:, None])[None]).pow(2).sum(-1)
    if len(pseudo_idx):
        own = total[pseudo_y] - pool_z[pseudo_idx]                    # sum of its class without itself
        c_own = own / (count[pseudo_y] - 1)[:, None]
        d[pseudo_idx, pseudo_y] = (pool_z[pseudo_idx] - c_own).pow(2).sum(-1)
    p = torch.softmax(-d / temperature, dim=1)
    return select_balanced(p, tau, z_per_class)
    ### END SOLUTION
""")

md(r"""
<details><summary>Hint 1 (idea)</summary>

Stack the human supports and the pseudo-supports into one labelled set and build per-class sums and
counts (the prototypes are sums over counts). For a pseudo-labelled item, subtract its own
embedding from its class's sum and 1 from its count before measuring its distance to that class.
Every class keeps at least its human support, so the count never drops to zero.
</details>

<details><summary>Hint 2 (code)</summary>

`onehot = F.one_hot(y, n_way).to(pool_z.dtype)`; `total, count = onehot.T @ z, onehot.sum(0)`; the
distances of all items to `total / count[:, None]`; then overwrite `d[pseudo_idx, pseudo_y]` with the
distances to `(total[pseudo_y] - pool_z[pseudo_idx]) / (count[pseudo_y] - 1)[:, None]`; finally
`select_balanced(torch.softmax(-d / temperature, dim=1), tau, z_per_class)`.
</details>
""")

code("self_training_round = check.self_training_round(self_training_round)")

md(r"""
**Your rounds, iterated.** Self-training is this round applied again and again until the selection
stops changing (the stop rule), here on pools of the new alphabets with the threshold of §5. Each
round re-selects at most $Z$ per class from scratch, so what grows is not the number of
pseudo-labels but the quality of the prototypes they feed.
""")

code(r"""
def iterate_rounds(pool, tau, rounds=6, z_per_class=3):
    # your 7.5 round until the selection repeats; the precision of each round's pseudo-labels
    idx, lab = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    precision = []
    for _ in range(rounds):
        new_idx, new_lab = self_training_round(pool.support_z, pool.support_y, pool.pool_z, idx, lab,
                                               pool.n_way, CAL[1].temperature, tau, z_per_class)
        if len(new_idx):
            precision.append((new_lab == pool.pool_y[new_idx]).double().mean().item())
        if torch.equal(new_idx, idx) and torch.equal(new_lab, lab):
            break                                   # the stop rule: nothing changed
        idx, lab = new_idx, new_lab
    return precision

for h in (0, 5):
    runs = [iterate_rounds(p, rows[0][1]) for p in study.sample_pools(NEW, 5, 1, 15, 50, n_distractors=h, seed=8)]
    first = mean_ci95([r[0] for r in runs if r])
    last = mean_ci95([r[-1] for r in runs if r])
    print(f"H = {h} distractor classes: precision of the pseudo-labels {first} in the first round, {last} in "
          f"the last; {sum(len(r) for r in runs) / len(runs):.1f} rounds on average before the selection repeated")
""")

md(r"""
**Measured: rounds of self-training.** Pools of 5 new classes (1 label each, 15 unlabelled images
each), with and without 5 distractor classes. Each round accepts up to $Z = 3$ labels per class.
Per round: the precision of the accepted pseudo-labels, the coverage (accepted / pool), and the
accuracy of the round's prototypes on held-out images of the same classes. Three settings: the
threshold from §5 with re-anchoring; a threshold that is too low ($\tau = 0.5$) with pseudo-labels
locked in as permanent supports (no re-anchoring, no mask); and the same low threshold repaired by
re-anchoring and the distance mask.
""")

code(r"""
rounds = budget.pick(quick=6, full=10, smoke=2)
n_st = budget.pick(quick=100, full=500, smoke=6)
SETTINGS = {
    "tau from §5, re-anchored": dict(tau=rows[0][1], anchored=True),
    "tau = 0.5, locked in": dict(tau=0.5, anchored=False),
    "tau = 0.5, re-anchored + mask": dict(tau=0.5, anchored=True, radius=CAL[1].radius),
}
st = {h: study.self_training_study(NEW, SETTINGS, n_way=5, k_shot=1, m_per_class=15, n_pools=n_st,
                                   rounds=rounds, z_per_class=3, temperature=CAL[1].temperature,
                                   n_distractors=h) for h in (0, 5)}
fig = study.plot_self_training(st, title="Self-training on the new alphabets (5-way 1-shot)")
plt.show()
for h, res in st.items():
    for name, r in res.items():
        print(f"H = {h}, {name:30s} last round: precision {r['precision'][-1]}, coverage {r['coverage'][-1]}, "
              f"held-out accuracy {r['heldout'][-1]} (round 0: {r['heldout'][0]})")
""")

md(r"""
Read the two rows of panels (one set of pools; bands are 95% intervals over pools). The library's
`self_training.self_train` differs from your round in two ways: its budget grows by $Z$ per class per
round, so coverage can grow; and re-anchored, it weights the human labels so that they keep at least
half of each prototype (LST re-fits on the labelled data), while `anchored=False` locks every accepted
label in as a permanent support with a plain mean. Compare the held-out accuracy of the last round with
round 0 in the printed lines: that is whether self-training helped or hurt the classifier. Without
distractors every pseudo-label has a right answer, and a wrong one is pulled back by its neighbours;
with distractors, images of no class pass the threshold (a softmax over the known classes can be sure
of them), join a prototype and drag it. The distance mask is the only control here that looks at
*how far* an item is, which is why it is the repair that matters when distractors are present.
""")

md(r"""
## 8 · A human in the loop

The model labels what it is sure of; a person labels the rest, one click at a time. Which item should
the person see next? **Active learning** orders the queue:
- **random**: the baseline;
- **least margin**: the item whose two best classes are closest;
- **entropy**: the item whose whole distribution is flattest;
- **k-center**: the item farthest (in the embedding) from everything already labelled, so the labels
  cover the pool (a "core set").

`labelling.LabellingSession` keeps the state of such a session in plain Python (propose, answer, undo,
skip, accept above a threshold, retrain every few answers, statistics), so that the widget below is a
thin view over it and the tests drive it without a browser. A **simulated oracle** answers from the
hidden labels, which lets us measure the effort: pool accuracy (human labels where given, the model's
proposal elsewhere) against the number of human clicks, for a pool of 20 new classes x 20 images
(400 images; the first click per class is the $K = 1$ label that names the class).

Two baselines without meta-learning: **pixel nearest neighbour** (the same session on raw pixels) and
chapter 00's **pre-trained embedding with a linear head** (a Conv-4 trained as an ordinary classifier
on the background classes; the head is refitted on the human labels).
""")

code(r"""
n_he = budget.pick(quick=3, full=10, smoke=1)
baseline_net = study.pretrained_baseline(data, device)      # chapter 00's baseline embedding (cached)
effort = study.human_effort(data, NEW, VAL, baseline_net, n_way=20, per_class=20, n_runs=n_he, seed=0)
fig = study.plot_human_effort(effort, title="Labelling 20 new classes x 20 images: accuracy vs human clicks")
plt.show()
from IPython.display import Markdown
display(Markdown(study.effort_table(effort)))
""")

md(r"""
**Try it yourself.** The widget below is a real labelling session on a pool from the new alphabets:
click the right class among the model's three guesses (or "none of these"), move the threshold and
accept everything above it, undo, skip. The counters show how many labels the model gave, how many
you gave, and the precision it *estimates* for its own labels (the mean calibrated confidence: only as
good as the calibration of §4).
""")

code(r"""
from course_utils.labelling_widget import labelling_widget

live = sample_pool(NEW, n_way=5, k_shot=1, m_per_class=12, n_distractors=1, generator=generator)
live_support_x, live_x = pool_images(live, data.new)
session = labelling.LabellingSession(live.pool_z, live.support_z, live.support_y,
                                     [name.split("/")[-1] for name in live.classes],
                                     temperature=CAL[1].temperature, tau=rows[0][1])
labelling_widget(session, live_x, class_images=live_support_x)   # each guess shows its labelled example
""")

md(r"""
## 9 · Audit: which final labels look wrong?

However a label was made, some will be wrong. **cleanlab** (Northcutt et al., 2021, "confident
learning") finds likely label errors from out-of-sample predicted probabilities: an item whose given
label gets a low probability, compared with the typical confidence of its class, is flagged.
"Out-of-sample" matters: an item sitting in its own prototype always looks right. So the
probabilities come from **leave-one-out prototypes**: each item is scored against prototypes built
without it (`label_audit.loo_probabilities`). Here: a labelled pool of 20 new classes x 20 images
(as in §8), 5% of its labels flipped at random, and how many of the flips cleanlab finds (with a
temperature fitted on 20-way meta-validation pools).
""")

code(r"""
kappa_20 = study.fit_pool_temperature(VAL, 20)
audit = study.audit_demo(NEW, n_way=20, per_class=20, flip=0.05, temperature=kappa_20, seed=3)
print(f"{audit['flipped']} labels flipped; cleanlab flagged {audit['flagged']}, of which {audit['hits']} were "
      f"flips (precision {audit['precision']:.0%}, recall {audit['recall']:.0%}).")
""")

md(r"""
## 10 · Your own images: `course-autolabel`

Everything above, as one command. Put your images in a folder:

```
my_images/
  labelled/
    cat/      a few images of each class (K or more)
    dog/
  unlabelled/  any images, any size, grey or colour
```

and run `course-autolabel my_images`. It writes `my_images/labels.csv` (path, label, confidence,
source: `auto`, `human`, `needs-review` or `none-of-these`) and prints a summary. Open the CSV, fill
in some `needs-review` rows and set their source to `human`, run it again: every human label is kept
exactly, used as a new support, and the rest is proposed again. Without `--checkpoint` the tool uses
the course's cached embedding (the one this chapter trained); below it is handed this chapter's
embedding explicitly, saved with `labelling_data.save_encoder`. (The embedding was meta-trained on
handwritten characters, so on photographs expect little.) Below, the tool on a folder written from the
new alphabets, whose true labels are kept beside it so that we can score the tool.
""")

code(r"""
folder = Path(tempfile.mkdtemp()) / "my_images"
study.write_demo_folder(folder, data.new, n_classes=10, k_shot=1, n_unlabelled=10, n_distractor_classes=2, seed=4)
save_encoder(encoder, folder.parent / "embedding.pt")     # this chapter's embedding, for --checkpoint
tool = [sys.executable, "-m", "course_utils.autolabel_tool", str(folder), "--checkpoint", str(folder.parent / "embedding.pt")]
print(subprocess.run(tool, capture_output=True, text=True).stdout)
truth = study.demo_truth(folder)


def score(csv_path):
    rows = list(csv.DictReader(open(csv_path)))
    auto = [r for r in rows if r["source"] == "auto"]
    right = sum(truth[r["path"]] == r["label"] for r in auto)
    return f"{len(auto)} automatic labels, {right} right; {len(rows)} rows"


print("scored against the hidden truth:", score(folder / "labels.csv"))
""")

md(r"""
How the tool decides: an image farther than the radius $r$ from every prototype is `none-of-these`; an
image is `auto` only if its confidence reaches $\tau$ **and** it lies within a tighter acceptance
radius $r_a$; everything else is `needs-review`. All of $\kappa$, $\tau$, $r$ and $r_a$ are chosen on
meta-validation pools of the folder's own size ($N = 10$ classes, $K = 1$) *with* distractor classes,
since the tool cannot know whether a folder holds images of no class (this one holds 2 such classes of
10 images). That is a harder problem than §5's 5-way pools without distractors, so $\tau$ is higher and
the coverage on meta-validation (printed on the summary's last line) is lower. Asking for less
precision buys coverage; the hidden truth says what that costs here:
""")

code(r"""
looser = subprocess.run(tool + ["--precision", "0.95", "--out", str(folder.parent / "labels_95.csv")],
                        capture_output=True, text=True).stdout
print(looser.splitlines()[0] if looser else "(no output)")
print("at 95% target precision:", score(folder.parent / "labels_95.csv"))
""")

code(r"""
rows_csv = list(csv.DictReader(open(folder / "labels.csv")))
review = [r for r in rows_csv if r["source"] == "needs-review" and truth[r["path"]]][:2]
for r in review:           # a person fills in two rows by hand
    r["label"], r["source"] = truth[r["path"]], "human"
    print(f"edited by hand: {r['path']} -> {r['label']}")
with open(folder / "labels.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows_csv[0]))
    w.writeheader(); w.writerows(rows_csv)
print(subprocess.run(tool, capture_output=True, text=True).stdout)
after = {r["path"]: r for r in csv.DictReader(open(folder / "labels.csv"))}
print("both human labels kept:", all(after[r["path"]]["label"] == r["label"] and after[r["path"]]["source"] == "human"
                                    for r in review))
auto = [r for r in after.values() if r["source"] == "auto"]
print(f"of the {len(auto)} automatic labels, {sum(truth[r['path']] == r['label'] for r in auto)} are right "
      "(the truth is known here because the folder was written from the glyph or Omniglot set)")
""")

md(r"""
## 11 · Pitfalls

- **Softmax over the wrong axis.** `softmax(logits, dim=0)` normalises over the *items*: every class's
  column sums to one, and a pool of one item is always "certain". The class axis is `dim=1`.
- **Tuning on the support set.** The supports are the prototypes (exactly so at $K = 1$): they are
  always right, so a temperature fitted on them goes to zero and a threshold chosen on them falls to
  the lowest confidence any support has, accepting far too much. Tune on meta-validation classes; §5
  measures what the mistake costs.
- **Distractors and the softmax.** Probabilities always sum to one over the known classes, so an
  image of an unknown class can look certain. Only a distance (or a mask built on one) can say "none
  of these".
- **Pseudo-labels that vote for themselves.** An item added to its prototype is then closer to it: at
  $K = 1$ a pseudo-support is half of its prototype. Score it without itself, and reselect every round.
- **Class imbalance in selection.** A global top-$Z N$ lets the easiest class take the slots; its
  prototype drifts outwards and absorbs its neighbours' items.
- **A threshold does not transfer for free.** It was chosen on other classes; the precision obtained
  on the new alphabet is measured, not assumed (the gap in §5).
- **"Estimated precision" is a model's opinion.** The widget's estimate is the mean calibrated
  confidence; it is only as good as the calibration and says nothing about distractors.
""")

md(r"""
## 12 · Summary
""")

code(r"""
print(study.headline(effort))
print(f"At 99% target precision the model labels {rows[0][2]['coverage']} of a 5-way 1-shot pool on its own "
      f"({rows[1][2]['coverage']} at 5-shot), with {100 * rows[0][2]['precision_pooled']:.1f}% and "
      f"{100 * rows[1][2]['precision_pooled']:.1f}% of those labels right.")
""")

md(r"""
- A meta-learned embedding turns $K$ labels per class into **proposals with confidences** for the whole
  pool. Temperature scaling fits one number on meta-validation; whether it brings the confidences closer
  to frequencies on a new alphabet is measured (§4), not assumed.
- A **threshold chosen on meta-validation** for a target precision decides what is accepted; its
  precision on a new alphabet must be measured, not assumed.
- The unlabelled pool itself refines the prototypes (**soft k-means**); a distance **mask** keeps
  distractors from dragging them.
- **Self-training** with class-balanced selection and re-anchoring on the human labels adds labels
  round after round. Distractors are what make it drift: §7 measures each setting with and without them.
- In a **human-in-the-loop** session, uncertainty-ordered questions and a meta-learned embedding cut the
  clicks needed for an accurate data set (the headline above, against pixels and a pre-trained net).
- Audit the final labels (cleanlab with leave-one-out probabilities), and use `course-autolabel` on
  your own folders.

## References

- Ren, Triantafillou, Ravi, Snell, Swersky, Tenenbaum, Larochelle & Zemel (2018). Meta-Learning for
  Semi-Supervised Few-Shot Classification. ICLR. arXiv:1803.00676.
- Snell, Swersky & Zemel (2017). Prototypical Networks for Few-shot Learning. NeurIPS. arXiv:1703.05175.
- Li, Sun, Liu, Zhou, Zheng, Chua & Schiele (2019). Learning to Self-Train for Semi-Supervised Few-Shot
  Classification. NeurIPS. arXiv:1906.00562.
- Liu, Lee, Park, Kim, Yang, Hwang & Yang (2019). Learning to Propagate Labels: Transductive Propagation
  Network for Few-shot Learning. ICLR. arXiv:1805.10002.
- Lee (2013). Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural
  Networks. ICML Workshop on Challenges in Representation Learning.
- Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang & Raffel (2020). FixMatch. NeurIPS.
  arXiv:2001.07685.
- Guo, Pleiss, Sun & Weinberger (2017). On Calibration of Modern Neural Networks. ICML. arXiv:1706.04599.
- Geifman & El-Yaniv (2017). Selective Classification for Deep Neural Networks. NeurIPS. arXiv:1705.08500.
- Woodward & Finn (2017). Active One-shot Learning. arXiv:1702.06559.
- Sener & Savarese (2018). Active Learning for Convolutional Neural Networks: A Core-Set Approach. ICLR.
  arXiv:1708.00489.
- Northcutt, Jiang & Chuang (2021). Confident Learning: Estimating Uncertainty in Dataset Labels. JAIR.
  arXiv:1911.00068 (the `cleanlab` library).
""")

code(r"""
checks.report(check.EXERCISES)
print(f"This notebook ran in {time.perf_counter() - T0:.0f} s (budget: {budget.current()}).")
""")

md(r"""
---
[← Chapter 06 · LEO](06_leo.ipynb) · [Course map](index.ipynb)
""")


def build(path: str = "solutions/07_autolabel.ipynb") -> None:
    nb = new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nb.cells = [new_markdown_cell(s) if kind == "md" else new_code_cell(s) for kind, s in CELLS]
    nbformat.write(nb, path)


if __name__ == "__main__":
    build()
