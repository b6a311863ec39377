"""utils/evaluation.BestTracker: which evaluation best.pth is, on scripted metrics where overall
and mean class accuracy disagree, with ties, and across a checkpoint's state_dict."""
from __future__ import annotations

from utils.evaluation import BestTracker


def metrics(overall: float, mean: float) -> dict:
    return {"overall_acc": overall, "mean_acc": mean, "per_class_acc": [mean, mean], "macro_f1": mean}


def test_best_is_chosen_on_validation_mean_class_accuracy_not_overall():
    # Validation overall accuracy peaks at step 2 (0.8), its mean class accuracy at step 4 (0.7):
    # a majority-class model is not the best one.
    best = BestTracker("val")
    assert best.update(2, test=metrics(0.9, 0.3), val=metrics(0.8, 0.5))
    assert best.update(4, test=metrics(0.6, 0.4), val=metrics(0.6, 0.7))
    assert not best.update(6, test=metrics(0.95, 0.2), val=metrics(0.9, 0.6))
    assert (best.step, best.score) == (4, 0.7)
    assert best.summary() == {"step": 4, "selected_on": "val", "overall_acc": 0.6, "mean_acc": 0.4,
                              "per_class_acc": [0.4, 0.4], "macro_f1": 0.4, "val_mean_acc": 0.7}
    # Without a validation split the same rule on the test split.
    on_test = BestTracker("test")
    assert on_test.update(2, test=metrics(0.8, 0.5), val=None)
    assert on_test.update(4, test=metrics(0.6, 0.7), val=None)
    assert (on_test.step, on_test.score) == (4, 0.7)


def test_the_first_of_equal_scores_is_kept():
    best = BestTracker("val")
    chosen = [best.update(step, test=metrics(0.1 * step, 0.1 * step), val=metrics(score, score))
              for step, score in ((2, 0.5), (4, 0.9), (6, 0.9))]
    assert chosen == [True, True, False]  # best.pth written at step 4 only
    assert best.step == 4 and best.test["mean_acc"] == 0.4


def test_state_dict_round_trip_keeps_the_score_a_later_evaluation_must_beat():
    best = BestTracker("val")
    best.update(4, test=metrics(0.6, 0.4), val=metrics(0.6, 0.9))
    resumed = BestTracker("val")
    resumed.load_state_dict(best.state_dict())
    assert (resumed.score, resumed.step, resumed.test, resumed.val) == (0.9, 4, best.test, best.val)
    assert not resumed.update(8, test=metrics(0.7, 0.7), val=metrics(0.7, 0.8))
    # A checkpoint from before the tracker: only best_mean_acc.
    legacy = BestTracker("test")
    legacy.load_state_dict(None, legacy_score=0.75)
    assert legacy.score == 0.75 and not legacy.update(2, test=metrics(0.7, 0.75), val=None)
