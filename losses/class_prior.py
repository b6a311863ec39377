"""One class prior, built from the training-label counts and shared by every method.

With n_k the training count of class k, N = sum n_k and K classes:

- MEK's re-balancing weights w_k = (N / (10 n_k)) ** p (``class_weights.py``; p = 1 in the paper);
- the log prior log pi_k = log(n_k / N) (logit adjustment, Menon et al. ICLR 2021; balanced
  softmax adds log n_k, which differs by a constant);
- LDAM's margins m_k = C / n_k^(1/4), C chosen so that max_k m_k = ``max_margin`` (Cao et al.
  NeurIPS 2019, official losses.py: ``m_list = 1/sqrt(sqrt(cls_num_list)); m_list *= max_m / max``);
- class-balanced weights from the effective number of samples, (1 - beta) / (1 - beta^n_k),
  normalised to sum to K (Cui et al. CVPR 2019, official class_balanced_loss.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .class_weights import class_weights_from_counts


@dataclass(frozen=True)
class ClassPrior:
    counts: tuple[int, ...]
    classes: tuple[str, ...]

    @classmethod
    def from_counts(cls, counts: Sequence[int], classes: Sequence[str] | None = None) -> "ClassPrior":
        counts = tuple(int(n) for n in counts)
        if not counts or min(counts) <= 0:
            empty = [i for i, n in enumerate(counts) if n <= 0]
            raise ValueError(f"classes {empty} have no training samples; the class prior needs every class")
        names = tuple(classes) if classes is not None else tuple(str(i) for i in range(len(counts)))
        return cls(counts, names)

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def mek_weights(self, power: float = 1.0) -> torch.Tensor:
        """w_k = (N / (10 n_k)) ** power."""
        return class_weights_from_counts(self.counts, power=power)

    def log_prior(self) -> torch.Tensor:
        """log(n_k / N)."""
        return torch.tensor([math.log(n / self.total) for n in self.counts], dtype=torch.float32)

    def ldam_margins(self, max_margin: float = 0.5) -> torch.Tensor:
        """m_k proportional to n_k^(-1/4), the largest equal to ``max_margin``."""
        raw = torch.tensor(self.counts, dtype=torch.float64).pow(-0.25)
        return (raw * (max_margin / raw.max())).float()

    def effective_number_weights(self, beta: float) -> torch.Tensor:
        """(1 - beta) / (1 - beta^n_k), normalised to sum to K; beta 0 gives all ones."""
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}")
        counts = torch.tensor(self.counts, dtype=torch.float64)
        weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
        return (weights / weights.sum() * self.num_classes).float()

    def describe(self) -> list[str]:
        """The prior's quantities, logged once at the start of a run."""
        def fmt(values: torch.Tensor) -> str:
            return ", ".join(f"{c}={v:.4f}" for c, v in zip(self.classes, values.tolist()))

        return [
            "class prior n_k/N: " + ", ".join(f"{c}={n / self.total:.4f}" for c, n in zip(self.classes, self.counts)),
            "  MEK weights N/(10 n_k): " + fmt(self.mek_weights()),
            "  log prior: " + fmt(self.log_prior()),
            "  LDAM margins (max 0.5): " + fmt(self.ldam_margins()),
            "  class-balanced weights (beta 0.9999): " + fmt(self.effective_number_weights(0.9999)),
        ]
