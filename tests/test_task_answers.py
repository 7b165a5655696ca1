"""What a predictor answers is shaped by the task, not by branches in the predictor: calibrated probabilities and
sorted label rows for classification, the score for regression, and how an ensemble combines several models."""

from __future__ import annotations

import math

import pytest
import torch

from fusent.tasks import get_task


def test_classification_answer_rows_and_explained():
    task = get_task("classification")
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    values = task.answer(logits, temperature=2.0)
    assert values.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert values[0, 0] == pytest.approx(math.exp(1) / (math.exp(1) + 1 + math.exp(-0.5)))
    rows = task.rows(values[1], ["neg", "neu", "pos"])
    assert [r["label"] for r in rows] == ["neu", "neg", "pos"]  # ties keep the label order
    assert rows[0]["score"] == pytest.approx(float(values[1, 1])) and rows[0]["score"] > rows[1]["score"]
    top = logits.argmax(1, keepdim=True)
    assert task.explained(logits, top, 2.0).tolist() == pytest.approx(values.max(1).values.tolist())


def test_regression_answer_rows_and_explained():
    task = get_task("regression")
    scores = torch.tensor([[1.5], [-0.25]])
    assert torch.equal(task.answer(scores, temperature=3.0), scores)
    assert task.rows(scores[1], []) == [{"score": -0.25}]
    assert task.explained(scores, torch.zeros(2, 1, dtype=torch.long)).tolist() == [1.5, -0.25]


def test_combine_means_calibrated_probabilities_or_scores():
    task = get_task("classification")
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    combined = task.combine([a, b], [1.0, 0.5])
    expected = (torch.softmax(a, -1) + torch.softmax(b / 0.5, -1)) / 2
    assert torch.softmax(combined, -1).tolist()[0] == pytest.approx(expected.tolist()[0])
    regression = get_task("regression")
    assert regression.combine([torch.tensor([[1.0]]), torch.tensor([[3.0]])], [1.0, 9.0]).item() == 2.0
