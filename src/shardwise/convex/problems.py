"""The losses, as sums over the rows one rank holds: pure float64 math, no communication.

Every problem is f(w) = (1/n) Σ_i loss_i(w) + (λ/2)‖w‖² over all n rows. A `LocalProblem`
returns the *sums* over its own rows (never the mean): the oracle adds them over ranks in one
all-reduce and divides by the global n, so ranks with unequal row counts give the global mean.

- ridge:       loss_i = ½ (x_iᵀw − y_i)²                          (least squares when λ = 0)
- logistic:    loss_i = log(1 + exp(x_iᵀw)) − y_i x_iᵀw,  y_i ∈ {0, 1}
- multinomial: loss_i = logsumexp(x_iᵀW) − x_iᵀW[:, y_i],  W ∈ R^{d×K} flattened, y_i ∈ {0..K−1}

Curvature at w (the per-row Hessian weights) is cached for the last w seen, so the many
Hessian-vector products of one Newton step cost one pass over the rows each, not two.
"""

from __future__ import annotations

import torch

KINDS = ("ridge", "logistic", "multinomial")


class LocalProblem:
    """Sums of loss, gradient, Hessian-vector products and Hessian diagonal over this rank's rows."""

    kind = "?"

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, n_classes: int = 1):
        self.features = features.to(torch.float64)  # (rows, d)
        self.labels = labels
        self.n_classes = n_classes
        self._curvature_at: torch.Tensor | None = None
        self._curvature = None

    @property
    def n_rows(self) -> int:
        return self.features.shape[0]

    @property
    def n_features(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        """Length of the flat parameter vector w."""
        return self.n_features

    def curvature(self, w: torch.Tensor):
        if self._curvature_at is None or not torch.equal(self._curvature_at, w):
            self._curvature_at = w.clone()
            self._curvature = self._compute_curvature(w)
        return self._curvature

    # Subclasses: loss_grad_sum, _compute_curvature, hvp_sum, diag_sum, hessian_sum.


class RidgeProblem(LocalProblem):
    kind = "ridge"

    def loss_grad_sum(self, w: torch.Tensor, with_grad: bool = True):
        residual = self.features @ w - self.labels
        loss = 0.5 * residual.dot(residual)
        return loss, (self.features.T @ residual if with_grad else None)

    def _compute_curvature(self, w):
        return None

    def hvp_sum(self, w, v):
        return self.features.T @ (self.features @ v)

    def diag_sum(self, w):
        return (self.features * self.features).sum(0)

    def hessian_sum(self, w):
        return self.features.T @ self.features


class LogisticProblem(LocalProblem):
    kind = "logistic"

    def loss_grad_sum(self, w: torch.Tensor, with_grad: bool = True):
        margins = self.features @ w
        # log(1 + e^z) exactly: softplus's linear cut-off at z > 20 is off by e^-20, too coarse for 1e-8 accuracy
        loss = torch.logaddexp(torch.zeros_like(margins), margins).sum() - self.labels.dot(margins)
        if not with_grad:
            return loss, None
        return loss, self.features.T @ (torch.sigmoid(margins) - self.labels)

    def _compute_curvature(self, w):
        p = torch.sigmoid(self.features @ w)
        return p * (1 - p)  # (rows,) σ(z)(1 − σ(z))

    def hvp_sum(self, w, v):
        return self.features.T @ (self.curvature(w) * (self.features @ v))

    def diag_sum(self, w):
        return self.curvature(w) @ (self.features * self.features)

    def hessian_sum(self, w):
        return self.features.T @ (self.curvature(w)[:, None] * self.features)


class MultinomialProblem(LocalProblem):
    """Softmax regression with the full K columns (over-parameterised; the L2 term makes it strongly convex)."""

    kind = "multinomial"

    def __init__(self, features, labels, n_classes):
        super().__init__(features, labels, n_classes)
        self.onehot = torch.nn.functional.one_hot(labels.long(), n_classes).to(torch.float64)  # (rows, K)

    @property
    def dim(self) -> int:
        return self.n_features * self.n_classes

    def _matrix(self, w):
        return w.reshape(self.n_features, self.n_classes)

    def loss_grad_sum(self, w, with_grad: bool = True):
        scores = self.features @ self._matrix(w)  # (rows, K)
        loss = torch.logsumexp(scores, dim=1).sum() - (scores * self.onehot).sum()
        if not with_grad:
            return loss, None
        return loss, (self.features.T @ (torch.softmax(scores, dim=1) - self.onehot)).reshape(-1)

    def _compute_curvature(self, w):
        return torch.softmax(self.features @ self._matrix(w), dim=1)  # (rows, K) class probabilities

    def hvp_sum(self, w, v):
        probs = self.curvature(w)
        direction_scores = self.features @ self._matrix(v)  # (rows, K)
        weighted = probs * direction_scores
        # per row: (diag(p) − p pᵀ) u
        row_hvp = weighted - probs * weighted.sum(1, keepdim=True)
        return (self.features.T @ row_hvp).reshape(-1)

    def diag_sum(self, w):
        probs = self.curvature(w)
        return ((self.features * self.features).T @ (probs * (1 - probs))).reshape(-1)

    def hessian_sum(self, w):
        """Dense (dK × dK), index (j, k) ↔ w[j*K + k]: Σ_i (diag(p_i) − p_i p_iᵀ) ⊗ x_i x_iᵀ."""
        probs = self.curvature(w)
        d, k = self.n_features, self.n_classes
        blocks = torch.empty(d, k, d, k, dtype=torch.float64)
        for a in range(k):
            for b in range(k):
                weight = probs[:, a] * ((1.0 if a == b else 0.0) - probs[:, b])
                blocks[:, a, :, b] = self.features.T @ (weight[:, None] * self.features)
        return blocks.reshape(d * k, d * k)


def make_local_problem(kind: str, features: torch.Tensor, labels: torch.Tensor, n_classes: int = 2) -> LocalProblem:
    """The problem of `kind` over these rows; labels float64 (ridge, logistic) or class indices (multinomial)."""
    if kind == "ridge":
        return RidgeProblem(features, labels.to(torch.float64))
    if kind == "logistic":
        return LogisticProblem(features, labels.to(torch.float64))
    if kind == "multinomial":
        return MultinomialProblem(features, labels, n_classes)
    raise ValueError(f"unknown problem kind {kind!r}; expected one of {KINDS}")
