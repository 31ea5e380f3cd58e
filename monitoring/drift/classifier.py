"""Classifier two-sample test: can a logistic regression tell live prompts from reference prompts?

Out-of-fold probabilities (stratified k-fold, scikit-learn) give an AUC; under "no drift" the live and
reference scores are exchangeable and the AUC is the Mann-Whitney U statistic / (n_ref n_live), so the
p-value is scipy's one-sided Mann-Whitney test. (Cross-fitted scores are not exactly independent, so the
p-value is approximate; the unit tests check its false-alarm rate.) The threshold reported is the AUC's
normal-approximation critical value at `alpha`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from monitoring.drift.base import DriftReport, InputDriftDetector, register_detector

__all__ = ["ClassifierDetector"]


@register_detector("classifier")
class ClassifierDetector(InputDriftDetector):
    """Logistic-regression classifier two-sample test (AUC, Mann-Whitney p-value)."""

    def __init__(
        self,
        *,
        alpha: float = 0.01,
        folds: int = 5,
        regularisation: float = 1.0,
        max_per_window: int = 2000,
        min_samples: int = 20,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if folds < 2:
            raise ValueError("folds must be at least 2")
        self.alpha = alpha
        self.folds = folds
        self.regularisation = regularisation
        self.max_per_window = max_per_window
        self.min_samples = max(min_samples, folds)

    def test(self, ref: np.ndarray, live: np.ndarray, *, seed: int = 0) -> DriftReport:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        windows = self.sample_windows(ref, live, seed=seed)
        ref, live = windows.ref, windows.live
        x = np.vstack([ref, live])
        y = np.concatenate([np.zeros(len(ref), dtype=int), np.ones(len(live), dtype=int)])
        model = LogisticRegression(C=self.regularisation, max_iter=1000)
        cv = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=seed)
        proba = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
        test = stats.mannwhitneyu(proba[y == 1], proba[y == 0], alternative="greater")
        n1, n0 = len(live), len(ref)
        auc = float(test.statistic) / (n1 * n0)
        sd = math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))
        return self.report(
            windows,
            statistic=auc,
            threshold=0.5 + float(stats.norm.ppf(1.0 - self.alpha)) * sd,
            p_value=float(test.pvalue),
            statistic_name="out-of-fold ROC AUC (live vs reference)",
            folds=self.folds,
            model=f"LogisticRegression(C={self.regularisation})",
        )
