"""Interactive widgets (ipywidgets).

:func:`episode_browser` lets a student pick a data set, an alphabet, N and K and see the
episode that comes out: the support set (what the learner is told) and the query set
(what it must label).

The browser draws its first episode at once, inside its ``Output`` widget. A notebook executed
headless (nbclient, nbval, ``jupyter nbconvert --execute``) therefore keeps that figure only in
its saved widget state, which JupyterLab does not display without a kernel;
``python -m course_utils.run_notebooks`` replaces the widget by that first figure, so a saved
solution shows it. Without a kernel at all (a terminal, pytest) the widgets are built and the
first episode is drawn into a matplotlib figure that is not shown; :func:`draw_episode` draws
one episode without widgets.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .episodes import ClassSet, sample_episode
from . import plots

__all__ = ["draw_episode", "episode_browser"]

ALL = "(all alphabets)"


def draw_episode(sets: Mapping[str, ClassSet], dataset: str, alphabet: str = ALL, n_way: int = 5,
                 k_shot: int = 1, seed: int = 0, q_query: int = 2) -> Figure | None:
    """Sample and draw one episode; print a clear message instead when the request can't be met."""
    import torch

    classes = sets[dataset]
    if alphabet != ALL:
        classes = classes.subset([i for i, a in enumerate(classes.alphabets) if a == alphabet],
                                 f"{dataset} / {alphabet}")
    try:
        ep = sample_episode(classes, n_way, k_shot, q_query, torch.Generator().manual_seed(seed))
    except ValueError as err:
        print(f"Can't sample this episode: {err}")
        return None
    scope = "all alphabets" if alphabet == ALL else alphabet.replace("_", " ")
    fig = plots.show_episode(ep, max_query=q_query,
                             title=f"{dataset}, {scope}: {n_way}-way {k_shot}-shot (seed {seed})")
    plt.show()
    return fig


def episode_browser(sets: Mapping[str, ClassSet], max_way: int = 20, max_shot: int = 5):
    """An ipywidgets browser over ``sets`` (name -> ClassSet); draws the first episode at once, into
    its Output widget (see the module's docstring for what a headless run keeps)."""
    import ipywidgets as W
    from IPython.display import display

    names = list(sets)
    dataset = W.Dropdown(options=names, value=names[0], description="data set")
    alphabet = W.Dropdown(description="alphabet")
    n_way = W.IntSlider(5, 2, max_way, description="N (way)")
    k_shot = W.IntSlider(1, 1, max_shot, description="K (shot)")
    seed = W.IntText(0, description="seed")

    def _alphabets(*_):
        alphabet.options = [ALL] + sorted(sets[dataset.value].alphabet_names())
        alphabet.value = ALL

    dataset.observe(_alphabets, names="value")
    _alphabets()
    out = W.interactive_output(lambda **kw: draw_episode(sets, **kw),
                               dict(dataset=dataset, alphabet=alphabet, n_way=n_way, k_shot=k_shot, seed=seed))
    box = W.VBox([W.HBox([dataset, alphabet]), W.HBox([n_way, k_shot, seed]), out])
    display(box)
    return box
