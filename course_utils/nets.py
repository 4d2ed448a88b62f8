"""The small networks the course shares.

- :func:`conv4`: the 4-block embedding of Vinyals et al. (2016), used by Snell et al.
  (2017): [3x3 conv, 64 filters -> BatchNorm -> ReLU -> 2x2 max-pool] x 4.
  A 28x28 image becomes a 64-d vector (28 -> 14 -> 7 -> 3 -> 1). PyTorch's default
  initialisation and BatchNorm eps 1e-5. Finn et al. (2017) use max-pooling only on
  MiniImagenet; their Omniglot net has stride-2 convolutions instead, Glorot initialisation
  and BatchNorm eps 1e-3. The course keeps this one backbone for every chapter.
- :func:`conv4_classifier`: the same with a linear head (MAML's few-shot classifier).
- :func:`sine_mlp`: Finn et al.'s regression net, 1 -> 40 -> 40 -> 1 with ReLU.

``batch_stats_only=True`` builds BatchNorm without running statistics, so it always
normalises with the statistics of the batch in hand (what MAML's paper does).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["conv_block", "conv4", "conv4_classifier", "sine_mlp", "embedding_dim", "Flatten"]


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(start_dim=1)


def conv_block(c_in: int, c_out: int, batch_stats_only: bool = False) -> nn.Sequential:
    """3x3 conv (padding 1) -> BatchNorm -> ReLU -> 2x2 max-pool, computed as BatchNorm -> max-pool ->
    ReLU: the same function (ReLU is monotone, so it commutes with max), with the ReLU on a quarter of
    the values (faster, benchmarks/maml_speed_ideas.py)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out, track_running_stats=not batch_stats_only),
        nn.MaxPool2d(2),
        nn.ReLU(),
    )


def conv4(in_channels: int = 1, hidden: int = 64, batch_stats_only: bool = False) -> nn.Sequential:
    """The Conv-4 embedding: ``(B, C, H, W) -> (B, hidden * (H // 16) * (W // 16))``."""
    return nn.Sequential(
        conv_block(in_channels, hidden, batch_stats_only),
        conv_block(hidden, hidden, batch_stats_only),
        conv_block(hidden, hidden, batch_stats_only),
        conv_block(hidden, hidden, batch_stats_only),
        Flatten(),
    )


def embedding_dim(net: nn.Module, image_shape: tuple[int, ...] = (1, 28, 28)) -> int:
    """Length of the vector ``net`` maps one image of ``image_shape`` to."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        p = next(net.parameters())
        d = net(torch.zeros(2, *image_shape, device=p.device, dtype=p.dtype)).shape[-1]
    net.train(was_training)
    return int(d)


def conv4_classifier(n_way: int, in_channels: int = 1, hidden: int = 64, image_size: int = 28,
                     batch_stats_only: bool = True) -> nn.Sequential:
    """Conv-4 followed by a linear layer to ``n_way`` logits (MAML's Omniglot model)."""
    body = conv4(in_channels, hidden, batch_stats_only)
    side = image_size
    for _ in range(4):
        side //= 2
    return nn.Sequential(*body, nn.Linear(hidden * max(side, 1) ** 2, n_way))


def sine_mlp(hidden: int = 40) -> nn.Sequential:
    """Finn et al.'s sinusoid regressor: 1 -> 40 -> 40 -> 1, ReLU."""
    return nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))
