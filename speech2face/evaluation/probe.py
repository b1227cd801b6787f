"""Linear probes: how much of a known attribute a feature carries, linearly.

Ridge regression with the ridge strength chosen per target by exact leave-one-out error on the
training rows (one SVD serves every strength), scored by R² on held-out rows. Used by the toy
world's self-check (which attributes do faces and voices carry?) and by evaluation (do v_s and
v_f carry the same attributes?).
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-3, 6.5, 0.5))


@dataclasses.dataclass
class RidgeProbe:
    """A fitted probe: `predict(x) = standardize(x) @ weights + intercept`.

    Attributes:
      mean, scale: [d] feature standardisation from the training rows.
      weights: [d, k]; intercept: [k]; alphas: [k] the ridge strength chosen per target.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: np.ndarray
    alphas: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """[n, d] features -> [n, k] predictions (float64)."""
        x = (np.asarray(x, np.float64) - self.mean) / self.scale
        return x @ self.weights + self.intercept


def _standardize(x):
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    return mean, scale


def _spectrum(xs):
    """(u [n, r], s² [r]) of xs [n, d] = u·diag(s)·vᵀ. Wide xs (n < d, e.g. 480 v_f of 4,096
    dimensions) from the eigendecomposition of the n × n Gram matrix xs·xsᵀ, a tenth of the
    SVD's time there; otherwise from the SVD."""
    if xs.shape[0] < xs.shape[1]:
        s2, u = np.linalg.eigh(xs @ xs.T)
        return u, np.maximum(s2, 0.0)
    u, s, _ = np.linalg.svd(xs, full_matrices=False)
    return u, s**2


def _ridge_weights(xs, u, s2, uty, alphas):
    """Ridge solutions [len(alphas), d, k] of centred xs [n, d] for targets with uᵀy = uty:
    xsᵀ·u·diag(1 / (s² + α))·uᵀy, which equals v·diag(s / (s² + α))·uᵀy without dividing by
    a small s."""
    return np.stack([xs.T @ (u @ (uty / (s2 + a)[:, None])) for a in alphas])


def fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    groups: Optional[np.ndarray] = None,
    num_folds: int = 5,
) -> RidgeProbe:
    """Fits ridge regressions from features `x` [n, d] to targets `y` [n] or [n, k].

    Each target gets the strength in `alphas` (relative to the mean squared singular value, so
    the grid suits any feature scale) with the lowest cross-validated squared error: exact
    leave-one-out when rows are independent, or `num_folds`-fold by `groups` when several rows
    share a group (e.g. two faces of one speaker; leaving one row out would then leak).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 3:
        raise ValueError(
            f"fit_ridge needs x [n, d] and y [n, k] with n >= 3; got {x.shape} and {y.shape}"
        )
    mean, scale = _standardize(x)
    xs = (x - mean) / scale
    y_mean = y.mean(0)
    yc = y - y_mean
    s2_mean = max((np.linalg.norm(xs) ** 2) / min(xs.shape), 1e-12)
    rel = np.asarray(alphas, np.float64) * s2_mean
    u, s2 = _spectrum(xs)
    uty = u.T @ yc
    if groups is None:
        errors = []
        for alpha in rel:
            shrink = s2 / (s2 + alpha)
            fitted = u @ (shrink[:, None] * uty)
            # Leave-one-out residuals of a linear smoother: r_i / (1 - h_ii); centring adds 1/n.
            hat = (u**2) @ shrink + 1.0 / x.shape[0]
            errors.append((((yc - fitted) / np.maximum(1.0 - hat, 1e-6)[:, None]) ** 2).mean(0))
    else:
        unique, group_index = np.unique(np.asarray(groups), return_inverse=True)
        folds = group_index % min(num_folds, len(unique))
        errors = np.zeros((len(rel), y.shape[1]))
        for fold in np.unique(folds):
            train, held = folds != fold, folds == fold
            m, sc = _standardize(x[train])
            xt = (x[train] - m) / sc
            y_m = y[train].mean(0)
            ut, s2t = _spectrum(xt)
            path = _ridge_weights(xt, ut, s2t, ut.T @ (y[train] - y_m), rel)
            pred = ((x[held] - m) / sc) @ path + y_m  # [alphas, n_held, k]
            errors += ((pred - y[held]) ** 2).sum(1)
    errors = np.asarray(errors)
    best_alpha = rel[np.argmin(errors, axis=0)]
    weights = np.concatenate(
        [_ridge_weights(xs, u, s2, uty[:, j:j + 1], [a])[0] for j, a in enumerate(best_alpha)],
        axis=1)
    return RidgeProbe(mean, scale, weights, y_mean, best_alpha / s2_mean)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 - SSE / SST (can be negative)."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred.reshape(-1, 1)
    sst = ((y_true - y_true.mean(0)) ** 2).sum(0)
    sse = ((y_true - y_pred) ** 2).sum(0)
    return 1.0 - sse / np.maximum(sst, 1e-12)


def probe_r2(x_train, y_train, x_test, y_test, groups_train=None) -> np.ndarray:
    """Fits on the training rows and returns held-out R² per target column."""
    return r2_score(y_test, fit_ridge(x_train, y_train, groups=groups_train).predict(x_test))
