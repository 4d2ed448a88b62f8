"""In-context learning of linear functions by a transformer.

Garg, Tsipras, Liang & Valiant (2022), "What Can Transformers Learn In-Context? A Case Study
of Simple Function Classes", NeurIPS, arXiv:2208.01066. Each training task is a function
f(x) = w^T x with w ~ N(0, I_d); a prompt shows k examples and a query,

    P = (x_1, f(x_1), x_2, f(x_2), ..., x_k, f(x_k)),   x_i ~ N(0, I_d),

and the model M_theta predicts, at every x position, the value there from the examples
before it. Training minimises, over random prompts,

    min_theta  E_P [ (1/k) sum_{i=1..k} ( M_theta(P^i) - f(x_i) )^2 ],
    P^i = (x_1, f(x_1), ..., x_{i-1}, f(x_{i-1}), x_i),

with no gradient step at test time: the "learning" happens inside one forward pass. The paper
reports the squared error divided by d (``normalised_error``): predicting 0 scores
E[(w^T x)^2] / d = 1, and least squares, optimal for noiseless data, scores 0 once i >= d.

Code indices start at 0: ``preds[:, i]`` predicts ``ys[:, i]`` from examples ``0..i-1``
(i in-context examples), the paper's P^{i+1}.

Token encoding (``interleave``): a prompt becomes 2k tokens of size d + 1, an x token
``[x_1, ..., x_d, 0]`` at position 2i and a y token ``[0, ..., 0, y]`` (y in the LAST
coordinate) at position 2i + 1, so x and y tokens never share a coordinate. (The paper's code
uses tokens of size d with y in the FIRST coordinate and lets the position tell them apart.)
The prediction for y_i is read at position 2i, the token of x_i, which under the causal mask
sees x_0, y_0, ..., x_{i-1}, y_{i-1}, x_i and never y_i.

Out of distribution (the paper's section 4), both through ``sample_linear_prompts``' arguments:
more examples than trained on (``k`` larger than the training k; the learned positional
embeddings stop at ``max_points``, and ``InContextTransformer`` raises a ValueError past it),
scaled inputs (``x_scale``; the zero predictor then scores x_scale^2, not 1) and noisy labels
(``noise_std``; least squares then spikes at i = d, where X is square and badly conditioned,
and ridge with lam = noise_std^2 is the optimal estimator).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .evaluation import mean_ci95
from .training import History, train_loop

__all__ = ["sample_linear_prompts", "interleave", "InContextTransformer", "in_context_loss",
           "Curriculum", "train_in_context", "least_squares_predictions", "ridge_predictions",
           "averaging_predictions", "knn_predictions", "zero_predictions", "normalised_error",
           "normalised_error_per_prompt", "error_curve", "error_curves"]

Predictor = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# Prompts and tokens
# ---------------------------------------------------------------------------------------------

def _check_int(name: str, v: int, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


def _check_prompts(xs: Tensor, ys: Tensor) -> tuple[int, int, int]:
    """``(B, k, d)`` of a valid prompt batch: xs ``(B, k, d)``, ys ``(B, k)``, floating point."""
    if not isinstance(xs, Tensor) or not isinstance(ys, Tensor):
        raise ValueError("xs and ys must be tensors (xs (B, k, d), ys (B, k)).")
    if xs.dim() != 3:
        raise ValueError(f"xs must have shape (B, k, d), got {tuple(xs.shape)}; "
                         "add a batch dimension with xs[None] for a single prompt.")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape (B, k) = {tuple(xs.shape[:2])} to match xs "
                         f"{tuple(xs.shape)}, got {tuple(ys.shape)}.")
    if not (xs.is_floating_point() and ys.is_floating_point()):
        raise ValueError(f"xs and ys must be floating point, got {xs.dtype} and {ys.dtype}.")
    if xs.device != ys.device:
        raise ValueError(f"xs is on {xs.device} but ys on {ys.device}; move both to one device.")
    b, k, d = xs.shape
    if b < 1 or k < 1 or d < 1:
        raise ValueError(f"xs must have B, k, d >= 1, got {tuple(xs.shape)}.")
    return b, k, d


def sample_linear_prompts(batch: int, k: int, d: int, generator: torch.Generator | None,
                          noise_std: float = 0.0, x_scale: float = 1.0,
                          device: torch.device | str | None = None,
                          dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """``batch`` prompts of ``k`` examples: ``xs (B, k, d)``, ``ys (B, k)``, ``w (B, d)``.

    ``w ~ N(0, I_d)``, ``x ~ N(0, x_scale^2 I_d)``, ``y = w^T x + noise_std * eps``. Sampled on
    the CPU with ``generator`` (seeded = the same prompts on any device), then moved to ``device``.
    """
    for name, v in (("batch", batch), ("k", k), ("d", d)):
        _check_int(name, v, 1)
    if not float(noise_std) >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}.")
    if not float(x_scale) > 0:
        raise ValueError(f"x_scale must be > 0 (1 is the training distribution), got {x_scale!r}.")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}.")
    w = torch.randn(batch, d, generator=generator, dtype=dtype)
    xs = x_scale * torch.randn(batch, k, d, generator=generator, dtype=dtype)
    ys = torch.einsum("bkd,bd->bk", xs, w)
    if noise_std > 0:
        ys = ys + noise_std * torch.randn(batch, k, generator=generator, dtype=dtype)
    if device is not None:
        xs, ys, w = xs.to(device), ys.to(device), w.to(device)
    return xs, ys, w


def interleave(xs: Tensor, ys: Tensor) -> Tensor:
    """Tokens ``(B, 2k, d + 1)``: ``[x_i, 0]`` at position 2i, ``[0, ..., 0, y_i]`` at 2i + 1."""
    b, k, d = _check_prompts(xs, ys)
    tokens = xs.new_zeros(b, 2 * k, d + 1)
    tokens[:, 0::2, :d] = xs
    tokens[:, 1::2, d] = ys
    return tokens


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class InContextTransformer(nn.Module):
    """A small GPT-style (pre-LayerNorm, causal) transformer that reads a prompt and predicts y.

    tokens -> linear read-in to ``d_model`` + learned positional embedding -> ``layers`` causal
    self-attention blocks -> final LayerNorm -> linear read-out to one number, read at the x
    positions. ``max_points`` bounds k (the positional table holds 2 * max_points positions).
    The paper: d_model 256, 8 heads, 12 layers, 40 points (``benchmarks`` scale, GPU).
    """

    def __init__(self, d: int, d_model: int = 64, heads: int = 4, layers: int = 3,
                 max_points: int = 40):
        super().__init__()
        for name, v in (("d", d), ("d_model", d_model), ("heads", heads), ("layers", layers),
                        ("max_points", max_points)):
            _check_int(name, v, 1)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads}).")
        self.d, self.max_points = d, max_points
        self.read_in = nn.Linear(d + 1, d_model)
        self.position = nn.Embedding(2 * max_points, d_model)
        nn.init.normal_(self.position.weight, std=0.02)  # GPT-2's initialisation
        block = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.backbone = nn.TransformerEncoder(block, layers, norm=nn.LayerNorm(d_model),
                                              enable_nested_tensor=False)
        self.read_out = nn.Linear(d_model, 1)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """``preds (B, k)``: ``preds[:, i]`` from ``(x_0, y_0, ..., x_{i-1}, y_{i-1}, x_i)``."""
        _, k, d = _check_prompts(xs, ys)
        if d != self.d:
            raise ValueError(f"this model reads d = {self.d} inputs, got xs with d = {d}; "
                             "zero-pad smaller inputs or build a model for this d.")
        if k > self.max_points:
            raise ValueError(f"prompts of k = {k} examples exceed max_points = {self.max_points} "
                             "(the learned positions stop there); use k <= max_points or build the "
                             "model with a larger max_points.")
        tokens = interleave(xs, ys)
        n = tokens.shape[1]
        h = self.read_in(tokens) + self.position(torch.arange(n, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=tokens.device, dtype=h.dtype)
        h = self.backbone(h, mask=mask, is_causal=True)
        return self.read_out(h[:, 0::2]).squeeze(-1)


def in_context_loss(model: Predictor, xs: Tensor, ys: Tensor) -> Tensor:
    """The training objective: mean squared error over every prompt and every position."""
    _check_prompts(xs, ys)
    return (model(xs, ys) - ys).square().mean()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Curriculum:
    """The paper's curriculum: start small, then grow the active dimension and the prompt length.

    At step t: ``d_active = min(d, d_start + (t // every) * d_step)`` and likewise
    ``k_active = min(k, k_start + (t // every) * k_step)``. Only the first ``d_active``
    coordinates of x are non-zero (the rest are zero-padded), so the model always reads d inputs.
    Garg et al. train d = 20, k = 41 with ``Curriculum(d_start=5, k_start=11, every=2000)``
    (d_step 1, k_step 2: the full task after 30,000 steps of 500,000, batch 64, Adam lr 1e-4).
    """

    d_start: int
    k_start: int
    every: int = 2000
    d_step: int = 1
    k_step: int = 2

    def __post_init__(self) -> None:
        _check_int("d_start", self.d_start, 1)
        _check_int("k_start", self.k_start, 1)
        _check_int("every", self.every, 1)
        _check_int("d_step", self.d_step, 0)
        _check_int("k_step", self.k_step, 0)

    def at(self, step: int, d: int, k: int) -> tuple[int, int]:
        """``(d_active, k_active)`` at training step ``step`` for the final task ``(d, k)``."""
        n = step // self.every
        return min(d, self.d_start + n * self.d_step), min(k, self.k_start + n * self.k_step)


def _padded_prompts(batch: int, k: int, d_active: int, d: int, generator: torch.Generator | None,
                    device: torch.device) -> tuple[Tensor, Tensor]:
    xs, ys, _ = sample_linear_prompts(batch, k, d_active, generator)
    if d_active < d:
        xs = torch.cat([xs, xs.new_zeros(batch, k, d - d_active)], dim=2)
    return xs.to(device), ys.to(device)


def train_in_context(model: InContextTransformer, steps: int, batch: int, d: int, k: int, lr: float,
                     generator: torch.Generator | None, curriculum: Curriculum | None = None,
                     max_seconds: float | None = None, desc: str = "in-context learning") -> History:
    """Adam on ``in_context_loss`` over fresh prompts each step (on the model's device).

    Logs ``loss`` (the mean squared error trained on), ``normalised`` (loss / d_active, 1 for
    predicting 0), ``d_active`` and ``k``. ``max_seconds`` stops early (see ``train_loop``).
    """
    _check_int("steps", steps, 1)
    _check_int("batch", batch, 1)
    _check_int("d", d, 1)
    _check_int("k", k, 1)
    if d != model.d:
        raise ValueError(f"d = {d} but the model reads d = {model.d} inputs; pass d={model.d}.")
    if k > model.max_points:
        raise ValueError(f"k = {k} exceeds the model's max_points = {model.max_points}; "
                         "train on k <= max_points.")
    if not float(lr) > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    if curriculum is not None and (curriculum.d_start > d or curriculum.k_start > k):
        raise ValueError(f"the curriculum starts at d = {curriculum.d_start}, k = {curriculum.k_start}, "
                         f"beyond the final task d = {d}, k = {k}; start at or below it.")
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    def step(i: int) -> dict[str, float]:
        d_i, k_i = curriculum.at(i, d, k) if curriculum is not None else (d, k)
        xs, ys = _padded_prompts(batch, k_i, d_i, d, generator, device)
        loss = in_context_loss(model, xs, ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        return {"loss": value, "normalised": value / d_i, "d_active": d_i, "k": k_i}

    hist = train_loop(step, steps, desc=desc, max_seconds=max_seconds)
    model.eval()
    return hist


# ---------------------------------------------------------------------------------------------
# Baselines: preds[:, i] uses examples 0..i-1 only (0 when i = 0)
# ---------------------------------------------------------------------------------------------

def zero_predictions(xs: Tensor, ys: Tensor) -> Tensor:
    """Predict 0 everywhere: normalised error 1 for x, w ~ N(0, I)."""
    _check_prompts(xs, ys)
    return torch.zeros_like(ys)


def _per_prefix(xs: Tensor, ys: Tensor, w_hat: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``preds[:, i] = w_hat(xs[:, :i], ys[:, :i]) . xs[:, i]`` for i >= 1, 0 for i = 0."""
    _, k, _ = _check_prompts(xs, ys)
    preds = torch.zeros_like(ys)
    for i in range(1, k):
        preds[:, i] = (w_hat(xs[:, :i], ys[:, :i]) * xs[:, i]).sum(-1)
    return preds


def least_squares_predictions(xs: Tensor, ys: Tensor) -> Tensor:
    """Ordinary least squares on each prefix: ``w_hat = X^+ y``, the minimum-norm solution when
    i < d (pseudo-inverse, on any device); the optimal estimator for noiseless data once i >= d."""
    return _per_prefix(xs, ys, lambda X, y: (torch.linalg.pinv(X) @ y[..., None]).squeeze(-1))


def ridge_predictions(xs: Tensor, ys: Tensor, lam: float = 0.1) -> Tensor:
    """Ridge regression on each prefix: ``w_hat = (X^T X + lam I)^{-1} X^T y`` (lam > 0).

    As lam -> 0 it tends to least squares (the minimum-norm solution when i < d); for large lam
    it tends to 0. With noise variance s^2 and w ~ N(0, I), lam = s^2 is the Bayes estimator.
    """
    if not float(lam) > 0:
        raise ValueError(f"lam must be > 0, got {lam!r}; use least_squares_predictions for lam = 0.")
    _, _, d = _check_prompts(xs, ys)

    def w_hat(X: Tensor, y: Tensor) -> Tensor:
        gram = X.transpose(1, 2) @ X + lam * torch.eye(d, dtype=X.dtype, device=X.device)
        return torch.linalg.solve(gram, (X.transpose(1, 2) @ y[..., None])).squeeze(-1)

    return _per_prefix(xs, ys, w_hat)


def averaging_predictions(xs: Tensor, ys: Tensor) -> Tensor:
    """``w_hat = (1/i) sum_{j<i} y_j x_j`` (unbiased for w when x ~ N(0, I)), pred ``w_hat . x_i``."""
    _, k, _ = _check_prompts(xs, ys)
    sums = torch.cumsum(ys[..., None] * xs, dim=1)  # sums[:, i] = sum over j <= i
    counts = torch.arange(1, k, dtype=xs.dtype, device=xs.device)[None, :, None]
    w_hat = sums[:, :-1] / counts  # w_hat[:, i - 1] uses j < i
    preds = torch.zeros_like(ys)
    preds[:, 1:] = (w_hat * xs[:, 1:]).sum(-1)
    return preds


def knn_predictions(xs: Tensor, ys: Tensor, n_neighbours: int = 3) -> Tensor:
    """Mean y of the ``min(i, n_neighbours)`` earlier examples nearest to x_i (Euclidean)."""
    _check_int("n_neighbours", n_neighbours, 1)
    _, k, _ = _check_prompts(xs, ys)
    preds = torch.zeros_like(ys)
    for i in range(1, k):
        dist = (xs[:, :i] - xs[:, i:i + 1]).square().sum(-1)  # (B, i)
        nearest = dist.topk(min(i, n_neighbours), dim=1, largest=False).indices
        preds[:, i] = ys[:, :i].gather(1, nearest).mean(1)
    return preds


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def normalised_error_per_prompt(preds: Tensor, ys: Tensor, d: int) -> Tensor:
    """``(pred - y)^2 / d`` for each prompt and position, ``(B, k)`` (for intervals over prompts)."""
    _check_int("d", d, 1)
    if not isinstance(preds, Tensor) or not isinstance(ys, Tensor) or preds.shape != ys.shape \
            or ys.dim() != 2:
        raise ValueError(f"preds and ys must both have shape (B, k), got "
                         f"{tuple(getattr(preds, 'shape', ()))} and {tuple(getattr(ys, 'shape', ()))}.")
    return (preds - ys).square() / d


def normalised_error(preds: Tensor, ys: Tensor, d: int) -> Tensor:
    """The paper's metric, ``(k,)``: mean over prompts of ``(pred - y)^2 / d`` at each position."""
    return normalised_error_per_prompt(preds, ys, d).mean(0)


def error_curve(predict_fn: Predictor, n_prompts: int, k: int, d: int,
                generator: torch.Generator | None, *, chunk: int = 1000,
                **prompt_kwargs) -> dict[str, list[float] | int]:
    """Normalised error against the number of in-context examples, over ``n_prompts`` prompts.

    Returns ``{"n_examples": [0, ..., k-1], "mean": [...], "ci95": [...], "n": n_prompts}``:
    position i has seen i examples; ``ci95`` is the half-width 1.96 s / sqrt(n) of
    :func:`course_utils.evaluation.mean_ci95`. ``prompt_kwargs`` go to ``sample_linear_prompts``
    (``noise_std``, ``x_scale``, ``device``, ``dtype``); a model's own device is used by default.
    Prompts are drawn in chunks of ``chunk`` under ``torch.no_grad()``.
    """
    _check_int("n_prompts", n_prompts, 2)
    _check_int("chunk", chunk, 1)
    if isinstance(predict_fn, nn.Module) and "device" not in prompt_kwargs:
        p = next(predict_fn.parameters(), None)
        if p is not None:
            prompt_kwargs["device"] = p.device
    errors = []
    with torch.no_grad():
        for start in range(0, n_prompts, chunk):
            xs, ys, _ = sample_linear_prompts(min(chunk, n_prompts - start), k, d, generator,
                                              **prompt_kwargs)
            errors.append(normalised_error_per_prompt(predict_fn(xs, ys), ys, d).cpu())
    per_prompt = torch.cat(errors)
    stats = [mean_ci95(per_prompt[:, i]) for i in range(k)]
    return {"n_examples": list(range(k)), "mean": [s.mean for s in stats],
            "ci95": [s.ci95 for s in stats], "n": n_prompts}


def error_curves(predictors: dict[str, Predictor], n_prompts: int, k: int, d: int, seed: int = 0,
                 **kwargs) -> dict[str, dict[str, list[float] | int]]:
    """``error_curve`` of each named predictor on the SAME prompts (each starts from ``seed``)."""
    if not predictors:
        raise ValueError("predictors is empty; pass e.g. {'least squares': least_squares_predictions}.")
    return {name: error_curve(fn, n_prompts, k, d, torch.Generator().manual_seed(seed), **kwargs)
            for name, fn in predictors.items()}
