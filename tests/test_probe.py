"""The ridge linear probe."""

import numpy as np

from speech2face.evaluation import probe


def test_recovers_a_linear_target_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 50))
    y = np.stack(
        [x[:, :3] @ [1.0, -2.0, 0.5] + 0.01 * rng.standard_normal(200), rng.standard_normal(200)],
        axis=1,
    )
    r2 = probe.probe_r2(x[:150], y[:150], x[150:], y[150:])
    assert r2[0] > 0.99
    assert r2[1] < 0.1


def test_leave_one_out_choice_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 8))
    y = x[:, 0] + 0.5 * rng.standard_normal(30)
    fitted = probe.fit_ridge(x, y, alphas=(0.01, 1.0, 100.0))
    xs = (x - x.mean(0)) / x.std(0)
    scale = (np.linalg.svd(xs, compute_uv=False) ** 2).sum() / 8

    def loo_error(alpha):
        errs = []
        for i in range(30):
            keep = np.arange(30) != i
            xk = xs[keep]  # standardisation held fixed, as in the closed form
            yk = y[keep]
            xm, ym = xk.mean(0), yk.mean()
            w = np.linalg.solve(
                (xk - xm).T @ (xk - xm) + alpha * scale * np.eye(8), (xk - xm).T @ (yk - ym)
            )
            errs.append((y[i] - ym - (xs[i] - xm) @ w) ** 2)
        return np.mean(errs)

    best = min((0.01, 1.0, 100.0), key=loo_error)
    assert np.isclose(fitted.alphas[0], best)


def test_r2_score_exact():
    np.testing.assert_allclose(probe.r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), [1.0])
    np.testing.assert_allclose(probe.r2_score([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]), [0.0])


def test_grouped_cross_validation_resists_duplicated_rows():
    # Each group appears twice with nearly identical features: leave-one-row-out would pick a
    # tiny ridge strength that memorises noise; grouped folds do not.
    rng = np.random.default_rng(2)
    base = rng.standard_normal((60, 300))
    y = base[:, 0] + rng.standard_normal(60)
    x = np.repeat(base, 2, axis=0) + 1e-3 * rng.standard_normal((120, 300))
    yy = np.repeat(y, 2)
    groups = np.repeat(np.arange(60), 2)
    x_test = rng.standard_normal((200, 300))
    y_test = x_test[:, 0] + rng.standard_normal(200)
    grouped = probe.probe_r2(x, yy, x_test, y_test, groups_train=groups)[0]
    by_row = probe.probe_r2(x, yy, x_test, y_test)[0]
    assert grouped > -0.05
    assert grouped > by_row + 0.1
    assert probe.fit_ridge(x, yy, groups=groups).alphas[0] >= probe.fit_ridge(x, yy).alphas[0]


def test_wide_features_match_the_closed_form_ridge():
    # n < d takes the Gram-matrix path: its weights equal (XᵀX + αI)⁻¹Xᵀy at the chosen α.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 120)) @ rng.standard_normal((120, 120))
    y = np.stack([x[:, :2] @ [0.5, -1.0], rng.standard_normal(40)], axis=1)
    for groups in (None, np.repeat(np.arange(20), 2)):
        fitted = probe.fit_ridge(x, y, groups=groups)
        xs = (x - fitted.mean) / fitted.scale
        s2_mean = np.linalg.norm(xs) ** 2 / min(xs.shape)
        for j, alpha in enumerate(fitted.alphas * s2_mean):
            w = np.linalg.solve(xs.T @ xs + alpha * np.eye(120), xs.T @ (y[:, j] - y[:, j].mean()))
            np.testing.assert_allclose(fitted.weights[:, j], w, rtol=1e-6, atol=1e-9)
