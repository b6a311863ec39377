"""The meta pseudo-label (MPL) feedback of Face2Exp's teacher (Pham et al., "Meta Pseudo Labels",
CVPR 2021; Zeng et al., "Face2Exp", CVPR 2022, "circuit feedback").

The student takes one step on the teacher's hard pseudo-labels. Its labelled loss before and
after that step gives the feedback

    h = CE_l(student before) - CE_l(student after)          (a number, no gradient)

(a first-order estimate of eta * grad CE_l . grad CE_u: positive when the pseudo-labels helped
the student on the labelled data), and the teacher's feedback term is

    L_mpl = h * CE(z_T(strong x), argmax z_T(strong x))

so minimising it makes the teacher more confident in its strong-view pseudo-labels when they
helped the student and less when they hurt. Sign and pseudo-labels as in the official code
(``src/main.py``: ``dot_product = s_loss_l_old - s_loss_l_new``; ``hard_pseudo_label`` is the
argmax of the teacher's strong-view logits, ``t_logits_us``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def student_feedback(loss_before: torch.Tensor, loss_after: torch.Tensor) -> torch.Tensor:
    """h: how much the student's labelled loss fell over its pseudo-label step (detached)."""
    return (loss_before.detach().float() - loss_after.detach().float())


def meta_pseudo_label_loss(loss_before: torch.Tensor, loss_after: torch.Tensor,
                           teacher_strong_logits: torch.Tensor) -> torch.Tensor:
    """h * CE(teacher strong-view logits, their own argmax); gradient flows to the teacher only."""
    logits = teacher_strong_logits.float()
    hard = logits.detach().argmax(dim=-1)
    return student_feedback(loss_before, loss_after) * F.cross_entropy(logits, hard)
