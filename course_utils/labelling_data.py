"""Data and embedding for automatic labelling (chapter 07 and ``course-autolabel``).

The situation: a person has a pool of unlabelled images of classes the model has never seen (a
*new alphabet*) and labels K of each class. A Prototypical network (Snell et al., 2017), meta-trained
on other alphabets, embeds every image once; labelling then works on the embeddings z = f_theta(x).

- :func:`labelling_data`: meta-train / meta-val / new-alphabet class sets. Meta-train and meta-val
  are disjoint parts of the *background* alphabets (Omniglot's, or the glyph set's); the new alphabet
  is the *evaluation* set, whose alphabets the model never saw. Meta-val (whole background alphabets
  held out of meta-training, unrotated) is where temperatures, thresholds and radii are
  chosen: never the K-shot support of the new alphabet.
- :func:`pretrained_encoder`: the course's meta-trained Conv-4 ProtoNet embedding, trained on first
  use (progress bar) and cached by its full configuration; or a checkpoint given by path.
- :func:`embed`: images ``(M, 1, H, W)`` (uint8 ink-high or float in [0, 1]) -> ``(M, D)``.
- :func:`sample_pool`: one labelling problem on embeddings: N classes with K labelled supports each
  and M unlabelled items each, plus unlabelled *distractors* from H other classes (true label -1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from . import budget, glyphs, omniglot
from .episodes import ClassSet, check_disjoint, with_rotations
from .episodic import embed_class_set, train_or_load
from .nets import conv4
from .protonet import ProtoNet, protonet_loss

__all__ = ["LabellingData", "labelling_data", "TRAIN_RECIPE", "pretrained_encoder", "load_encoder",
           "save_encoder", "embed", "embed_classes", "Pool", "sample_pool", "pool_images", "NONE"]

NONE = -1  # the label of a distractor: "none of these classes"


@dataclass
class LabellingData:
    """``train`` (rotated, for meta-training), ``val`` and ``new`` (unrotated) class sets."""

    train: ClassSet
    val: ClassSet
    new: ClassSet
    source: str
    note: str

    def __repr__(self) -> str:
        return (f"LabellingData({self.source}: meta-train {len(self.train)}, meta-val {len(self.val)}, "
                f"new alphabet(s) {len(self.new)} classes)")


def labelling_data(source: str = "auto", size: int = 28, n_val: int = 100, seed: int = 0) -> LabellingData:
    """Background alphabets split into meta-train (rotated x4) and meta-val (whole alphabets, at least
    ``n_val`` classes); the evaluation alphabets are the new ones.

    ``source``: ``"auto"`` (Omniglot when ``OMNIGLOT_DIR`` points at its zips, else glyphs),
    ``"omniglot"`` or ``"glyphs"``. Nothing is downloaded.
    """
    if source not in ("auto", "omniglot", "glyphs"):
        raise ValueError(f"source must be 'auto', 'omniglot' or 'glyphs', got {source!r}.")
    if source == "omniglot" and not omniglot.available():
        raise FileNotFoundError(omniglot.why_unavailable())
    use_omniglot = source == "omniglot" or (source == "auto" and omniglot.available())
    if use_omniglot:
        bg, new = omniglot.load_omniglot("background", size), omniglot.load_omniglot("evaluation", size)
        name, note = "omniglot", f"Using real Omniglot from {omniglot.omniglot_dir()}."
    else:
        bg, new = glyphs.load_glyphs("background", size), glyphs.load_glyphs("evaluation", size)
        name = "glyphs"
        note = "Using the built-in glyph set." + ("" if source == "glyphs" else " " + omniglot.why_unavailable())
    train, val = _split_alphabets(bg, n_val, seed)
    train = with_rotations(train)
    train.title, val.title, new.title = f"{name} meta-train", f"{name} meta-val", f"{name} new alphabets"
    check_disjoint(train, val, new)
    return LabellingData(train, val, new, name, note)


def _split_alphabets(bg: ClassSet, n_val: int, seed: int) -> tuple[ClassSet, ClassSet]:
    """Whole background alphabets (in a seeded order) go to meta-val until it holds >= ``n_val`` classes.

    Meta-val then differs from meta-train as the new alphabets do (by alphabet, not only by character),
    so a threshold chosen on it meets the same kind of shift it will meet on a new alphabet.
    """
    names = bg.alphabet_names()
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    val_alpha: list[str] = []
    count = 0
    for i in order:
        if count >= n_val:
            break
        val_alpha.append(names[i])
        count += bg.alphabets.count(names[i])
    val_idx = [c for c, a in enumerate(bg.alphabets) if a in val_alpha]
    train_idx = [c for c, a in enumerate(bg.alphabets) if a not in val_alpha]
    if not train_idx:
        raise ValueError(f"n_val = {n_val} leaves no background alphabet for meta-training; lower it.")
    return bg.subset(train_idx), bg.subset(val_idx)


# The embedding's training recipe per budget (20-way 1-shot episodes as in Snell et al.'s "higher way").
TRAIN_RECIPE = {
    "quick": dict(n_way=20, k_shot=1, q_query=5, steps=600, lr=3e-3, lr_halve_every=0),
    "full": dict(n_way=60, k_shot=1, q_query=5, steps=20000, lr=1e-3, lr_halve_every=2000),
    "smoke": dict(n_way=5, k_shot=1, q_query=2, steps=3, lr=3e-3, lr_halve_every=0),
}


def pretrained_encoder(data: LabellingData, device: torch.device | str = "cpu",
                       recipe: dict | None = None, seed: int = 0) -> nn.Module:
    """The meta-trained Conv-4 ProtoNet embedding f_theta (eval mode), from the cache or trained now.

    ``recipe`` defaults to ``TRAIN_RECIPE[budget.current()]``; the cache key covers the recipe, the
    seed, the data and the code (``episodic.train_or_load``).
    """
    recipe = dict(recipe if recipe is not None else TRAIN_RECIPE[budget.current()])
    model = ProtoNet(conv4()).to(device)
    train_or_load("autolabel-protonet", model, protonet_loss, data.train, config={"source": data.source},
                  device=device, seed=seed, desc="meta-training the embedding (ProtoNet)", **recipe)
    return model.encoder.eval()


def save_encoder(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Write a Conv-4 embedding's weights to ``path`` (for ``course-autolabel --checkpoint``)."""
    torch.save({"kind": "course_utils conv4 encoder",
                "state": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}}, path)


def load_encoder(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """A Conv-4 embedding from a file written by :func:`save_encoder` (or a ProtoNet's state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Give the path of a file written by "
                                "course_utils.labelling_data.save_encoder, or leave it out to use the "
                                "course's cached embedding.")
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {err}). "
                         "Write one with course_utils.labelling_data.save_encoder.") from None
    state = stored.get("state", stored) if isinstance(stored, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict of weights; write it with save_encoder.")
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    net = conv4()
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{path} does not hold the weights of the course's Conv-4 embedding ({first}). "
                         "Write one with course_utils.labelling_data.save_encoder.") from None
    return net.to(device).eval()


def embed(encoder: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """``(M, 1, H, W)`` images (uint8 0-255 ink-high, or float in [0, 1]) -> ``(M, D)`` embeddings, CPU."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"embed takes a 4-D tensor of images (M, 1, H, W), got {shape}.")
    p = next(encoder.parameters())
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size].to(p.device)
                xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
                out.append(encoder(xb).flatten(start_dim=1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def embed_classes(encoder: nn.Module, classes: ClassSet) -> ClassSet:
    """Every example of ``classes`` embedded once: a ClassSet of vectors (same names and counts)."""
    p = next(encoder.parameters())
    return embed_class_set(encoder, classes, device=p.device)


@dataclass
class Pool:
    """One labelling problem on embeddings.

    ``support_z`` ``(N*K, D)`` class-major with ``support_y`` (the human's K labels per class);
    ``pool_z`` ``(P, D)`` unlabelled items, shuffled, with their hidden true labels ``pool_y`` in
    ``0..N-1``, or ``NONE`` (-1) for a distractor (a class in no support set). ``classes`` names the
    N classes, ``distractor_classes`` the H others.
    """

    support_z: Tensor
    support_y: Tensor
    pool_z: Tensor
    pool_y: Tensor
    n_way: int
    k_shot: int
    classes: list[str] = field(default_factory=list)
    distractor_classes: list[str] = field(default_factory=list)
    support_ref: Tensor | None = None
    pool_ref: Tensor | None = None

    @property
    def is_distractor(self) -> Tensor:
        return self.pool_y == NONE


def sample_pool(embedded: ClassSet, n_way: int, k_shot: int, m_per_class: int, n_distractors: int = 0,
                m_distractor: int | None = None, generator: torch.Generator | None = None) -> Pool:
    """Sample a :class:`Pool` from an embedded class set (Ren et al. 2018's episode, without queries).

    ``n_way`` classes get ``k_shot`` labelled supports and ``m_per_class`` unlabelled items each;
    ``n_distractors`` further classes give ``m_distractor`` (default ``m_per_class``) unlabelled items
    each, labelled ``NONE``.
    """
    m_d = m_per_class if m_distractor is None else m_distractor
    if n_way < 2:
        raise ValueError(f"n_way must be at least 2, got {n_way}.")
    if k_shot < 1 or m_per_class < 0 or n_distractors < 0 or m_d < 0:
        raise ValueError("k_shot must be >= 1 and m_per_class, n_distractors, m_distractor >= 0.")
    if n_way + n_distractors > len(embedded):
        raise ValueError(f"{n_way} classes + {n_distractors} distractor classes need "
                         f"{n_way + n_distractors} classes, but {embedded.title} has {len(embedded)}. "
                         "Lower n_way or n_distractors.")
    need = max(k_shot + m_per_class, m_d if n_distractors else 0)
    if embedded.min_examples() < need:
        raise ValueError(f"Each class must give k_shot + m_per_class = {k_shot + m_per_class} examples, but "
                         f"{embedded.title} has classes with only {embedded.min_examples()}. Lower them.")
    chosen = torch.randperm(len(embedded), generator=generator)[:n_way + n_distractors].tolist()
    zs, pz, py, sref, pref = [], [], [], [], []

    def ref(c: int, j: Tensor) -> Tensor:
        return torch.stack([torch.full_like(j, c), j], dim=1)

    for n, c in enumerate(chosen):
        ex = embedded.examples(c)
        pick = torch.randperm(ex.shape[0], generator=generator)
        if n < n_way:
            zs.append(ex[pick[:k_shot]])
            sref.append(ref(c, pick[:k_shot]))
            pz.append(ex[pick[k_shot:k_shot + m_per_class]])
            pref.append(ref(c, pick[k_shot:k_shot + m_per_class]))
            py.append(torch.full((m_per_class,), n, dtype=torch.long))
        else:
            pz.append(ex[pick[:m_d]])
            pref.append(ref(c, pick[:m_d]))
            py.append(torch.full((m_d,), NONE, dtype=torch.long))
    pool_z, pool_y = torch.cat(pz).float(), torch.cat(py)
    order = torch.randperm(pool_z.shape[0], generator=generator)
    return Pool(torch.cat(zs).float(), torch.arange(n_way).repeat_interleave(k_shot), pool_z[order],
                pool_y[order], n_way, k_shot, [embedded.names[c] for c in chosen[:n_way]],
                [embedded.names[c] for c in chosen[n_way:]], torch.cat(sref), torch.cat(pref)[order])


def pool_images(pool: Pool, images: ClassSet) -> tuple[Tensor, Tensor]:
    """The images ``(support_x, pool_x)`` behind a pool sampled from ``images``' embedding."""
    def look(ref: Tensor) -> Tensor:
        return torch.stack([images.examples(int(c))[int(j)] for c, j in ref.tolist()])
    return look(pool.support_ref), look(pool.pool_ref)
