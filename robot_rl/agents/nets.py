"""Network pieces shared by the agents: MLPs with LayerNorm, batched critic ensembles, the
tanh-squashed Gaussian policy head."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, *, layer_norm: bool = True) -> nn.Sequential:
    """Linear → [LayerNorm] → ReLU per hidden layer, then a linear output layer."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """`n` independent linear layers evaluated in one batched matmul.

    Input (n, batch, in) or (batch, in) (broadcast to every member); output (n, batch, out).
    Each member has its own weights, initialized like `nn.Linear`.
    """

    def __init__(self, n: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.n, self.in_dim, self.out_dim = n, in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        w, b = self.weight, self.bias
        if members is not None:  # evaluate a subset only (e.g. the random 2 of 10 for the target)
            w, b = w[members], b[members]
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(w.shape[0], -1, -1)
        return torch.baddbmm(b, x, w)


class _LayerNormAffineReLU(torch.autograd.Function):
    """relu(layer_norm(x) · w + b) with per-member w, b of shape (n, 1, d).

    Autograd of the unfused expression makes four full-size multiplications in the affine's
    backward alone; this one does one per needed gradient and reuses the native LayerNorm
    backward. The critic ensemble spends about half its update time in these element-wise
    passes, so it matters on CPUs (see `robot-rl bench learner`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x_hat, mean, rstd = torch.ops.aten.native_layer_norm(x, (x.shape[-1],), None, None, 1e-5)
        y = torch.addcmul(b, x_hat, w).relu_()
        ctx.save_for_backward(x, mean, rstd, x_hat, w, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, mean, rstd, x_hat, w, y = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, y, 0.0)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(1, keepdim=True)
        if ctx.needs_input_grad[1]:
            grad_w = (grad * x_hat).sum(1, keepdim=True)
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_layer_norm_backward(
                grad.mul_(w), x, (x.shape[-1],), mean, rstd, None, None, [True, False, False])[0]
        return grad_x, grad_w, grad_b


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with separate affine parameters per ensemble member: (n, batch, d)."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, d))
        self.bias = nn.Parameter(torch.zeros(n, 1, d))
        self.d = d

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        w, b = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return torch.addcmul(b, F.layer_norm(x, (self.d,)), w)

    def forward_relu(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """relu(forward(x)) in one fused autograd node."""
        w, b = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return _LayerNormAffineReLU.apply(x, w, b)


class EnsembleMLP(nn.Module):
    """`n` independent MLPs (own weights, own heads: no shared last layer), batched.

    forward(x (batch, in) or (n, batch, in), members=None) → (n or len(members), batch, out).
    """

    def __init__(self, n: int, in_dim: int, hidden: tuple[int, ...], out_dim: int, *, layer_norm: bool = True) -> None:
        super().__init__()
        self.n = n
        dims = (in_dim, *hidden)
        self.linears = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(EnsembleLayerNorm(n, h) for h in hidden) if layer_norm else None
        self.out = EnsembleLinear(n, dims[-1], out_dim)
        self._compiled = None  # see compile_forward

    def compile_forward(self) -> None:
        """Run forward (and its backward) as torch.compile'd kernels: on CPUs the fused
        LayerNorm · affine · ReLU passes cut the 10-critic SAC update by 15–35 % (robot-rl
        bench learner). Compiling takes ≈ 20 s on the first call of each of the few call patterns
        (cached on disk after). Without a working C++ compiler it falls back to eager, once, with a warning."""
        # The unbound function, called with self: a deepcopy of this module then runs its own weights.
        self._compiled = torch.compile(EnsembleMLP._forward_unfused, dynamic=False)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(self, x, members)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                log.warning("torch.compile failed (%s); the critic ensemble runs eagerly. Install a C++ "
                            "compiler (apt install g++) or pass --no-compile to skip trying.", str(exc).splitlines()[0])
                self._compiled = None
        for i, lin in enumerate(self.linears):
            x = lin(x, members)
            if self.norms is not None:
                x = self.norms[i].forward_relu(x, members)
            else:
                x = F.relu(x, inplace=True)
        return self.out(x, members)

    def _forward_unfused(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        # Plain ops for the compiler to fuse (the hand-fused autograd node of `forward` would hide them).
        for i, lin in enumerate(self.linears):
            x = lin(x, members)
            if self.norms is not None:
                x = self.norms[i](x, members)
            x = F.relu(x)
        return self.out(x, members)


class TanhGaussianHead(nn.Module):
    """Maps features to a tanh-squashed diagonal Gaussian over actions in (−1, 1)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], action_dim: int, *, log_std_min: float = -10.0,
                 log_std_max: float = 2.0, layer_norm: bool = True) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden, 2 * action_dim, layer_norm=layer_norm)
        self.action_dim = action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the pre-squash Gaussian, each (batch, action_dim)."""
        mean, log_std = self.net(features).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1.0)
        return mean, log_std

    def sample(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized action (batch, action_dim) in [−1, 1] and its log-probability (batch,).

        The log-probability is computed from the pre-tanh sample, so it stays finite and exact
        where float32's tanh rounds the action to exactly ±1 (|pre| ≳ 9)."""
        return self.sample_from(*self(features))

    @staticmethod
    def sample_from(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample` given the head's (mean, log_std) output."""
        std = log_std.exp()
        pre = mean + std * torch.randn_like(mean)
        action = torch.tanh(pre)
        log_prob = (-0.5 * ((pre - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # Change of variables for tanh, in the numerically stable form 2(log 2 − x − softplus(−2x)).
        log_prob = log_prob - (2.0 * (math.log(2.0) - pre - F.softplus(-2.0 * pre))).sum(-1)
        return action, log_prob

    def mode(self, features: torch.Tensor) -> torch.Tensor:
        """Deterministic action: tanh of the mean."""
        return torch.tanh(self(features)[0])


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target ← (1 − τ)·target + τ·source, in place (Polyak averaging). Frozen source parameters
    (requires_grad False, e.g. a pretrained backbone) never change, so they are skipped."""
    pairs = [(t, s) for t, s in zip(target.parameters(), source.parameters()) if s.requires_grad]
    if pairs:
        with torch.no_grad():
            torch._foreach_lerp_([t for t, _ in pairs], [s for _, s in pairs], tau)
