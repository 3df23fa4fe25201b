"""Prompt flows of Bayes-PFL: Gaussian base distributions pushed through planar flows.

Planar flow (Rezende & Mohamed 2015), K steps in the text-token width W, for z [..., W]:

    z_k = z_{k-1} + u_k tanh(w_k . z_{k-1} + b_k)
    log|det dz_k/dz_{k-1}| = log( |1 + u_k . psi_k| + eps ),   psi_k = (1 - tanh^2(w_k . z_{k-1} + b_k)) w_k

(``eps`` = 1e-5 as in the public code; the invertibility reparameterisation of u is not applied,
as in the public code.) Base distribution q0 = N(mu, diag var) with var = exp(h / 2), h the output of
the "variance" MLP (the public code's convention); a sample is z_0 = mu + sqrt(var) * e, e ~ N(0, I).

Single-sample KL estimate of q_K (the flowed distribution) against the prior N(0, I), constants
(which cancel) dropped:

    KL ~= log q0(z_0) - sum_k log|det J_k| - log N(z_K; 0, I)
        = sum_i [-log(var_i)/2 - e_i^2/2] - sum_k log|det J_k| + |z_K|^2 / 2

The public code computes the image-agnostic (state) KL with the batch's N images as its batch size:
its log q0 and log prior terms are broadcast to N rows and averaged, the single log-det is summed and
divided by N, so its state KL is log q0 - log prior - (1/N) sum_k log|det J_k| (``log_det_scale`` = 1/N,
``preset: paper``); 1 gives the estimator above.

Three distributions (Bayes-PFL A1.3):
- :class:`ImageSpecificFlow`: mu, var, u, w, b all amortised on the global image embedding g [N, D].
- :class:`ImageAgnosticFlow` (normal / abnormal): a free ``state`` vector [W] goes through an encoder
  shared by both states (held by the model and passed in); u, w, b are free parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def planar_flow(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Push z [..., W] through K planar steps; u, w [..., K, W] and b [..., K] broadcast against z.

    Returns (z_K [..., W], sum_k log|det J_k| [...]).
    """
    log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    for k in range(u.shape[-2]):
        h = torch.tanh((z * w[..., k, :]).sum(-1) + b[..., k])
        psi_u = (1 - h ** 2) * (w[..., k, :] * u[..., k, :]).sum(-1)
        log_det = log_det + torch.log((1 + psi_u).abs() + eps)
        z = z + u[..., k, :] * h.unsqueeze(-1)
    return z, log_det


class GaussianEncoder(nn.Module):
    """x [..., in] -> (mu, var) [..., out]: two MLPs in -> hidden -> hidden -> out with Softplus,
    var = exp(h / 2) (the public code's "log variance" head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.mean = _mlp(in_dim, hidden, out_dim)
        self.log_var = _mlp(in_dim, hidden, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), torch.exp(0.5 * self.log_var(x))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                         nn.Linear(hidden, out_dim))


def sample_flow(mu: torch.Tensor, var: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                noise: torch.Tensor, log_det_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised samples and their KL estimates (module docstring; the log-det term is weighted
    by ``log_det_scale``).

    mu, var [N, W]; u, w [N or 1, K, W]; b [N or 1, K]; noise e [N, R, W] (zeros = the base mean).
    Returns (z_K [N, R, W], KL [N, R]).
    """
    z0 = mu.unsqueeze(1) + var.sqrt().unsqueeze(1) * noise
    zk, log_det = planar_flow(z0, u.unsqueeze(1), w.unsqueeze(1), b.unsqueeze(1))
    log_q0 = (-0.5 * var.log().unsqueeze(1) - 0.5 * noise ** 2).sum(-1)
    log_prior = -0.5 * (zk ** 2).sum(-1)
    return zk, log_q0 - log_det_scale * log_det - log_prior


class ImageSpecificFlow(nn.Module):
    """q(z | g): base and K flow steps amortised on the image embedding g [N, D]; z in R^W."""

    def __init__(self, embed_dim: int, hidden: int, width: int, n_flows: int) -> None:
        super().__init__()
        self.n_flows, self.width = n_flows, width
        self.encoder = GaussianEncoder(embed_dim, hidden, width)
        self.amor_u = nn.Linear(embed_dim, n_flows * width)
        self.amor_w = nn.Linear(embed_dim, n_flows * width)
        self.amor_b = nn.Linear(embed_dim, n_flows)

    def forward(self, g: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g [N, D], noise [N, R, W] -> (z_K [N, R, W], KL [N, R])."""
        n = g.shape[0]
        mu, var = self.encoder(g)
        u = self.amor_u(g).view(n, self.n_flows, self.width)
        w = self.amor_w(g).view(n, self.n_flows, self.width)
        return sample_flow(mu, var, u, w, self.amor_b(g), noise)


class ImageAgnosticFlow(nn.Module):
    """q(z) of one state: a free ``state`` vector [W] through the shared encoder, free flow steps.

    Free parameters are initialised N(0, 1) as in the public code.
    """

    def __init__(self, width: int, n_flows: int) -> None:
        super().__init__()
        self.state = nn.Parameter(torch.randn(1, width))
        self.u = nn.Parameter(torch.randn(1, n_flows, width))
        self.w = nn.Parameter(torch.randn(1, n_flows, width))
        self.b = nn.Parameter(torch.randn(1, n_flows))

    def forward(self, encoder: GaussianEncoder, noise: torch.Tensor, log_det_scale: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """noise [R, W] -> (z_K [R, W], KL [R])."""
        mu, var = encoder(self.state)
        zk, kl = sample_flow(mu, var, self.u, self.w, self.b, noise.unsqueeze(0), log_det_scale)
        return zk[0], kl[0]
