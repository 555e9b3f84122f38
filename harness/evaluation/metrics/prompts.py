"""Prompt accuracy: the share of a text-conditioned generator's samples that a classifier of the dataset
assigns to the class their prompt names (``EvalBatch.labels``; samples of prompts with no known
class, label -1, are not counted). Chance is 1 / num_classes. The judge (``classifier``, a
``harness.evaluation.classifier.PromptClassifier``) is set by the generation evaluation, and rows
name it with its own test accuracy."""
from __future__ import annotations

import math

import torch

from harness.core.contracts import EvalBatch, Metric
from harness.core.errors import VQBenchError
from harness.core.registry import METRICS


@METRICS.register("prompt_accuracy", description="share of prompted samples a dataset classifier assigns to "
                                                 "the prompt's class (text-conditioned generators)")
class PromptAccuracy(Metric):
    name = "prompt_accuracy"
    requires = frozenset({"samples", "labels", "classifier"})
    higher_is_better = {"prompt_accuracy": True}
    protocol = "prompt-classifier"

    def __init__(self):
        super().__init__()
        self.add_state("correct", torch.zeros((), dtype=torch.float64))
        self.add_state("counted", torch.zeros((), dtype=torch.float64))
        self.classifier = None

    def update(self, batch: EvalBatch) -> None:
        if self.classifier is None:
            raise VQBenchError("prompt_accuracy needs a classifier of the dataset (the generation evaluation sets it)")
        known = batch.labels.cpu() >= 0
        if not bool(known.any()):
            return
        predicted = self.classifier.predict(batch.samples[known.to(batch.samples.device)])
        self.correct += float((predicted == batch.labels.cpu()[known]).sum())
        self.counted += float(known.sum())

    @property
    def feature_extractor(self) -> str:
        return self.classifier.name if self.classifier is not None else ""

    def compute(self) -> dict[str, float]:
        if self.counted == 0:
            self.reasons["prompt_accuracy"] = "no sample's prompt names a known class"
            return {"prompt_accuracy": math.nan}
        return {"prompt_accuracy": float(self.correct / self.counted)}
