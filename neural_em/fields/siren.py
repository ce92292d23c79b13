"""Batched SIRENs: ``R`` independent sine networks with stacked weights (torch).

One SIREN maps a coordinate ``c`` (3,) in [-1, 1] to a value: hidden layers
``h = sin(ω0 (W h + b))`` with ω0 = 30, a linear output layer. ``R`` of them (one per region)
are stored as stacked tensors, weights ``(R, out, in)`` and biases ``(R, out)``, and run with
batched matrix products (``torch.baddbmm``), so all regions of a map train as one network.

Weights are kept in the standard SIREN parameterisation (ω0 outside the weights) in files;
:func:`fold_omega` and :func:`unfold_omega` convert to and from the folded form
``sin(W' h + b')`` (``W' = ω0 W``) that the trainer optimises (one multiplication less per
layer; Adam with its step size and epsilon scaled by ω0 makes the same updates).

Initialisation (Sitzmann et al. 2020): first layer ``W ~ U(-1/in, 1/in)``, other layers
``W ~ U(-sqrt(6/in)/ω0, sqrt(6/in)/ω0)``, biases ``U(-1/sqrt(in), 1/sqrt(in))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

OMEGA0 = 30.0


def layer_dims(widths: Sequence[int]) -> list[tuple[int, int]]:
    """``(in, out)`` per layer for a network of layer widths ``[3, h1, ..., 1]``."""
    return [(int(a), int(b)) for a, b in zip(widths[:-1], widths[1:], strict=True)]


def init_siren(
    n_regions: int,
    widths: Sequence[int],
    *,
    generator: torch.Generator,
    omega0: float = OMEGA0,
    dtype: torch.dtype = torch.float32,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """SIREN initial weights ``[(R, out, in)]`` and biases ``[(R, out)]`` (unfolded), on CPU.

    Drawn on CPU from ``generator`` so a seed gives the same network on every device.
    """
    weights, biases = [], []
    for k, (n_in, n_out) in enumerate(layer_dims(widths)):
        bound = 1.0 / n_in if k == 0 else math.sqrt(6.0 / n_in) / omega0
        w = torch.rand(n_regions, n_out, n_in, generator=generator, dtype=dtype) * 2 - 1
        b = torch.rand(n_regions, n_out, generator=generator, dtype=dtype) * 2 - 1
        weights.append(w * bound)
        biases.append(b / math.sqrt(n_in))
    return weights, biases


def fold_omega(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], omega0: float = OMEGA0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Multiply every sine layer's weights and biases by ω0 (all layers but the last)."""
    n = len(weights)
    return (
        [w * omega0 if k < n - 1 else w.clone() for k, w in enumerate(weights)],
        [b * omega0 if k < n - 1 else b.clone() for k, b in enumerate(biases)],
    )


def unfold_omega(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], omega0: float = OMEGA0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inverse of :func:`fold_omega`."""
    return fold_omega(weights, biases, 1.0 / omega0)


def output_density(
    y: np.ndarray, softplus_beta: float | None
) -> tuple[np.ndarray, np.ndarray | float]:
    """Density from network outputs ``y`` (float64 array) and its derivative ``d density /
    d y``: ``(y + 1) / 2`` (linear, the study's), or ``softplus_β((y + 1) / 2)``, which is
    never negative and reaches 0 smoothly, so a network can leave masked or clipped voxels
    (exact zeros) at 0 by going below -1 instead of matching a step."""
    u = 0.5 * (y + 1.0)
    if softplus_beta is None:
        return u, 0.5
    bu = float(softplus_beta) * u
    dens = np.logaddexp(0.0, bu) / float(softplus_beta)
    return dens, 0.5 * (0.5 * (1.0 + np.tanh(0.5 * bu)))  # 0.5 * sigmoid(βu)


def output_density_torch(y: torch.Tensor, softplus_beta: float) -> torch.Tensor:
    """:func:`output_density` (softplus case) for tensors, differentiable, for training."""
    return torch.nn.functional.softplus(0.5 * (y + 1.0), beta=float(softplus_beta))


def forward_folded(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Outputs ``(R, B, out)`` of folded networks at coordinates ``x`` ``(R, B, 3)``."""
    h = x
    last = len(weights) - 1
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if k < last:
            h = torch.sin(h)
    return h


def forward_with_jacobian(
    x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``(R, B)`` and their gradients ``(R, B, 3)`` with respect to the coordinates,
    for folded single-output networks at ``x`` ``(R, B, 3)`` (forward-mode, exact)."""
    r, n, _ = x.shape
    h = x
    tangent = None  # d h / d x, (R, B * 3, width)
    last = len(weights) - 1
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        wt = w.transpose(1, 2)
        z = torch.baddbmm(b.unsqueeze(1), h, wt)
        if tangent is None:
            tangent = wt.unsqueeze(1).expand(r, n, *wt.shape[1:]).reshape(r, n * 3, -1)
        else:
            tangent = torch.bmm(tangent, wt)
        if k < last:
            h = torch.sin(z)
            tangent = (tangent.view(r, n, 3, -1) * torch.cos(z).unsqueeze(2)).view(r, n * 3, -1)
        else:
            h = z
    return h[..., 0], tangent.view(r, n, 3)


def forward_with_gradient(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    *,
    with_gradient: bool = True,
    weights_t: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outputs ``(R, B)`` and (``with_gradient``) their gradients ``(R, B, 3)`` with respect
    to the coordinates, for folded single-output networks at ``x`` ``(R, B, 3)``.

    The gradient is exact, by reverse mode written out: ``g = w_last``, then for each sine
    layer from the top ``g = (g * cos z_k) @ W_k``; one matrix product per layer, about half
    the work of :func:`forward_with_jacobian`'s three tangents. ``weights_t`` may give the
    weights already transposed ``(R, in, out)`` and contiguous (saves a copy per call).
    """
    if weights_t is None:
        weights_t = [w.transpose(1, 2) for w in weights]
    h = x
    pre: list[torch.Tensor] = []
    last = len(weights) - 1
    for k, (wt, b) in enumerate(zip(weights_t, biases, strict=True)):
        z = torch.baddbmm(b.unsqueeze(1), h, wt)
        if k < last:
            h = torch.sin(z)
            if with_gradient:
                pre.append(z)
        else:
            h = z
    y = h[..., 0]
    if not with_gradient:
        return y, None
    g = weights[last]  # (R, 1, width): d y / d h_{last - 1}
    for k in range(last - 1, -1, -1):
        g = torch.bmm(pre[k].cos_().mul_(g), weights[k])
    return y, g


def forward_numpy(
    x: np.ndarray,
    weights_t: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    weights: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`forward_with_gradient` in NumPy (stacked BLAS products, in-place sines): for
    inference on CPU, where it runs faster than torch's batched products.

    x: ``(R, B, 3)``; ``weights_t[k]`` ``(R, in, out)`` folded and transposed; ``biases[k]``
    ``(R, 1, out)``; ``weights[k]`` ``(R, out, in)`` (folded) to get the gradient. Returns
    outputs ``(R, B)`` and, with ``weights``, gradients ``(R, B, 3)`` (same dtype as ``x``).
    """
    h = x
    pre: list[np.ndarray] = []
    last = len(weights_t) - 1
    for k, (wt, b) in enumerate(zip(weights_t, biases, strict=True)):
        z = np.matmul(h, wt)
        z += b
        if k < last:
            if weights is not None:
                pre.append(z)
                h = np.sin(z)
            else:
                h = np.sin(z, out=z)
        else:
            h = z
    y = h[..., 0]
    if weights is None:
        return y, None
    g = weights[last]  # (R, 1, width): d y / d h_{last - 1}
    for k in range(last - 1, -1, -1):
        c = np.cos(pre[k], out=pre[k])
        c *= g
        g = np.matmul(c, weights[k])
    return y, g
