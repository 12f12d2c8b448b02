"""Classification metrics computed the same way for teacher, students and baselines."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows = true label, columns = predicted)."""
    labels = list(range(num_labels))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "rows": int(len(y_true)),
    }

