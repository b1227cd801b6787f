"""Linear probes: how much of a known attribute a feature carries, linearly.

Ridge regression with the ridge strength chosen per target by exact leave-one-out error on the
training rows (one SVD serves every strength), scored by R² on held-out rows. Used by the toy
world's self-check (which attributes do faces and voices carry?) and by evaluation (do v_s and
v_f carry the same attributes?).
"""

import dataclasses
from typing import Sequence

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


def fit_ridge(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = DEFAULT_ALPHAS) -> RidgeProbe:
    """Fits ridge regressions from features `x` [n, d] to targets `y` [n] or [n, k].

    Each target gets the strength in `alphas` (relative to the mean squared singular value, so
    the grid suits any feature scale) with the lowest exact leave-one-out squared error.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 3:
        raise ValueError(
            f"fit_ridge needs x [n, d] and y [n, k] with n >= 3; got {x.shape} and {y.shape}"
        )
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-12] = 1.0
    xs = (x - mean) / scale
    y_mean = y.mean(0)
    yc = y - y_mean
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ yc  # [r, k]
    s2 = s**2
    rel = np.asarray(alphas, np.float64) * max(s2.mean(), 1e-12)
    best_err = np.full(y.shape[1], np.inf)
    best_alpha = np.zeros(y.shape[1])
    for alpha in rel:
        shrink = s2 / (s2 + alpha)  # [r]
        fitted = u @ (shrink[:, None] * uty)
        # Leave-one-out residuals of a linear smoother: r_i / (1 - h_ii); the centring adds 1/n.
        hat = (u**2) @ shrink + 1.0 / x.shape[0]
        loo = (yc - fitted) / np.maximum(1.0 - hat, 1e-6)[:, None]
        err = (loo**2).mean(0)
        better = err < best_err
        best_err[better] = err[better]
        best_alpha[better] = alpha
    weights = np.stack(
        [vt.T @ ((s / (s2 + a)) * uty[:, j]) for j, a in enumerate(best_alpha)], axis=1
    )
    return RidgeProbe(mean, scale, weights, y_mean, best_alpha / max(s2.mean(), 1e-12))


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 - SSE / SST (can be negative)."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred.reshape(-1, 1)
    sst = ((y_true - y_true.mean(0)) ** 2).sum(0)
    sse = ((y_true - y_pred) ** 2).sum(0)
    return 1.0 - sse / np.maximum(sst, 1e-12)


def probe_r2(x_train, y_train, x_test, y_test) -> np.ndarray:
    """Fits on the training rows and returns held-out R² per target column."""
    return r2_score(y_test, fit_ridge(x_train, y_train).predict(x_test))
