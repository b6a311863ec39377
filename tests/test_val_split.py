"""The validation split (--val-fraction / --val-split official): held out from every training
batch, identical on resume and in test.py, and the only thing best.pth is chosen on."""
import json
from collections import Counter

import pytest

import engine
import test as test_script
import train
from data import build_dataset
from data.base import ImageListDataset
from data.split import balanced_fraction, balanced_quotas, stratified_holdout
from utils.checkpoint import load_checkpoint
from utils.logging import read_metrics

from conftest import write_image

TINY = ["--dataset", "demo", "--img-size", "32", "--batch-size", "16", "--workers", "0", "--no-progress",
        "--backbone", "resnet18", "--lr", "1e-3"]


def run_train(demo_root, output, *extra):
    train.cli([*TINY, "--data-root", str(demo_root), "--output", str(output), *extra])


def test_holdout_is_stratified_seeded_and_keeps_every_class():
    targets = [0] * 50 + [1] * 10 + [2] * 2 + [3] * 1
    held = stratified_holdout(targets, 0.2, seed=3)
    assert held == stratified_holdout(targets, 0.2, seed=3) == sorted(held)
    assert held != stratified_holdout(targets, 0.2, seed=4)
    per_class = Counter(targets[i] for i in held)
    assert per_class == {0: 10, 1: 2}  # round(0.2 n_k), and a class of 1 or 2 keeps its images for training
    with pytest.raises(ValueError, match=r"--val-fraction must be in \(0, 1\)"):
        stratified_holdout(targets, 1.0, seed=0)


def test_holdout_never_takes_a_class_s_only_image():
    # 0.6 of a class of 1 rounds to 1 image, of a class of 2 to 1 (round(1.2)), of 10 to 6: the
    # cap n_k - 1 leaves the single image to training and lets the class of 2 give one.
    targets = [0] * 10 + [1] * 2 + [2] * 1
    for seed in range(5):
        per_class = Counter(targets[i] for i in stratified_holdout(targets, 0.6, seed))
        assert per_class == {0: 6, 1: 1}


def test_labelled_fraction_and_holdout_draw_from_different_permutations():
    # One class of 40, the same fraction and seed: were the two seeded alike, the labelled images
    # would be exactly the held-out ones (the first 10 of one permutation), for every seed.
    targets = [0] * 40
    for seed in range(5):
        assert balanced_fraction(targets, 0.25, seed, 1) != stratified_holdout(targets, 0.25, seed)


def test_labelled_fraction_is_as_balanced_as_the_classes_allow():
    assert balanced_quotas([2, 10, 10], 9) == [2, 4, 3]  # cap 3 fits (2 + 3 + 3 = 8), one more to class 1
    # FERPlus's majority-labelled training images (surprise .. contempt), 10% of 26,940: disgust (175) and
    # contempt (162) keep all theirs, the others 393 (cap 392, 2,694 - 337 - 6 x 392 = 5 more in class order).
    ferplus = [3378, 648, 175, 7410, 3403, 2399, 9365, 162]
    assert balanced_quotas(ferplus, 2694) == [393, 393, 175, 393, 393, 393, 392, 162]
    assert balanced_quotas([5, 5], 10) == [5, 5] and balanced_quotas([3, 1], 0) == [0, 0]
    targets = [0] * 30 + [1] * 4 + [2] * 6
    kept = balanced_fraction(targets, 0.25, seed=1, num_classes=3)  # 10 of 40: cap 3 (9), one more to class 0
    assert Counter(targets[i] for i in kept) == {0: 4, 1: 3, 2: 3} and kept == sorted(kept)
    assert kept == balanced_fraction(targets, 0.25, seed=1, num_classes=3) != balanced_fraction(targets, 0.25, 2, 3)


def test_validation_comes_out_of_the_labelled_fraction(demo_root, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(demo_root, out, "--epochs", "1", "--labelled-fraction", "0.5", "--val-fraction", "0.25")
    config = json.loads((out / "config.json").read_text())
    full = build_dataset("demo", demo_root, "train")
    labelled = balanced_fraction(full.targets, 0.5, 0, len(full.classes))
    held = config["val_record"]["indices"]  # indices into the whole training list, as without the flag
    assert config["labelled_record"]["count"] == len(labelled) == 64 and set(held) < set(labelled)
    per_class = Counter(full.targets[i] for i in labelled)
    assert config["labelled_record"]["per_class"] == [per_class[k] for k in range(len(full.classes))]
    expected_val = sum(min(round(0.25 * n), n - 1) for n in per_class.values())
    assert len(held) == expected_val and sum(config["train_counts"]) == 64 - expected_val
    metrics = test_script.cli([str(out / "last.pth"), "--split", "val", "--workers", "0", "--no-progress",
                               "--out-dir", str(tmp_path / "t")])
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == expected_val
    with pytest.raises(SystemExit):  # resuming without the flag would train on other images
        run_train(demo_root, out, "--epochs", "2", "--val-fraction", "0.25", "--resume", "auto")
    assert "the labelled split must stay the same" in capsys.readouterr().err


def test_no_validation_image_reaches_a_training_batch(demo_root, tmp_path, monkeypatch):
    seen: dict[str, set] = {"train": set(), "val": set()}
    original = ImageListDataset.__getitem__

    def spy(self, key):
        image, label, used = original(self, key)
        kind = "val" if self.source.endswith(":val") else "train" if self.source.endswith(":train") else None
        if kind:
            seen[kind].add(self.samples[used].path)
        return image, label, used

    monkeypatch.setattr(ImageListDataset, "__getitem__", spy)
    out = tmp_path / "run"
    run_train(demo_root, out, "--epochs", "1", "--val-fraction", "0.25")  # 96 kept images: 6 full batches
    record = json.loads((out / "config.json").read_text())["val_record"]
    full = build_dataset("demo", demo_root, "train")
    held = {full.samples[i].path for i in record["indices"]}
    assert record["mode"] == "fraction" and len(held) == record["count"] == 32  # 25% of 128, stratified
    assert seen["train"] and not seen["train"] & held  # never in a training batch ...
    assert seen["train"] == {s.path for s in full.samples} - held  # ... and every other image is
    assert seen["val"] == held  # the validation evaluation reads exactly the held-out images
    config = json.loads((out / "config.json").read_text())
    assert sum(config["train_counts"]) == 128 - 32
    # test.py rebuilds the same split from config.json
    metrics = test_script.cli([str(out / "last.pth"), "--split", "val", "--workers", "0", "--no-progress",
                               "--out-dir", str(tmp_path / "t")])
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == 32
    last = read_metrics(out / "metrics.jsonl")[-1]
    assert metrics["mean_acc"] == pytest.approx(last["val_mean_acc"], abs=1e-9)


def _scripted_evaluate(val_scores, test_scores, calls):
    def fake(model, loader, device, num_classes, *args, **kwargs):
        kind = "val" if loader.dataset.source.endswith(":val") else "test"
        index = sum(1 for c in calls if c == kind)
        calls.append(kind)
        score = (val_scores if kind == "val" else test_scores)[index]
        return {"overall_acc": score, "mean_acc": score, "per_class_acc": [score] * num_classes, "macro_f1": score,
                "confusion_matrix": [[0] * num_classes for _ in range(num_classes)]}
    return fake


def test_best_checkpoint_follows_validation_not_test(demo_root, tmp_path, monkeypatch, capsys):
    # Validation peaks at the second evaluation, test at the first: best.pth must be the second.
    calls: list[str] = []
    monkeypatch.setattr(engine, "evaluate", _scripted_evaluate([0.5, 0.9, 0.6], [0.9, 0.4, 0.5], calls))
    out = tmp_path / "val"
    run_train(demo_root, out, "--steps", "6", "--eval-interval", "2", "--val-fraction", "0.25")
    records = read_metrics(out / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert [r["val_mean_acc"] for r in records] == [0.5, 0.9, 0.6] and [r["mean_acc"] for r in records] == [0.9, 0.4, 0.5]
    best = load_checkpoint(out / "best.pth")
    assert best["progress"]["step"] == steps[1] and best["metrics"]["mean_acc"] == 0.4
    assert records[-1]["best"] == {"step": steps[1], "selected_on": "val", "overall_acc": 0.4, "mean_acc": 0.4,
                                   "per_class_acc": [0.4] * 7, "macro_f1": 0.4, "val_mean_acc": 0.9}
    assert all(r["selected_on"] == "val" for r in records)
    log = (out / "log.txt").read_text()
    assert f"last evaluation (step {steps[2]}): overall 50.00" in log
    assert f"test at the validation-chosen step (best.pth, step {steps[1]}, validation mean 90.00): overall 40.00" in log

    # Without a validation split the same scores choose on test (the first evaluation), labelled so.
    calls.clear()
    monkeypatch.setattr(engine, "evaluate", _scripted_evaluate([], [0.9, 0.4, 0.5], calls))
    run_train(demo_root, tmp_path / "test", "--steps", "6", "--eval-interval", "2")
    assert load_checkpoint(tmp_path / "test" / "best.pth")["progress"]["step"] == 2
    assert read_metrics(tmp_path / "test" / "metrics.jsonl")[-1]["best"]["selected_on"] == "test"


def test_test_py_labels_a_validation_chosen_best(demo_root, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(demo_root, out, "--epochs", "1", "--val-fraction", "0.25")
    capsys.readouterr()
    test_script.cli([str(out / "best.pth"), "--workers", "0", "--no-progress", "--out-dir", str(tmp_path / "t")])
    printed = capsys.readouterr().out
    assert "best.pth was chosen on validation mean class accuracy" in printed
    last = read_metrics(out / "metrics.jsonl")[-1]
    assert f"test at the last evaluation (last.pth, step {last['step']}): overall {last['overall_acc'] * 100:.2f}" in printed


def test_resume_keeps_the_split_and_refuses_another(demo_root, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(demo_root, out, "--steps", "4", "--eval-interval", "2", "--val-fraction", "0.25")
    before = json.loads((out / "config.json").read_text())["val_record"]
    run_train(demo_root, out, "--steps", "8", "--eval-interval", "2", "--val-fraction", "0.25", "--resume", "auto")
    assert json.loads((out / "config.json").read_text())["val_record"] == before
    assert load_checkpoint(out / "last.pth")["config"]["val_record"] == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_train(demo_root, out, "--steps", "12", "--val-fraction", "0.3", "--resume", "auto")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--val-fraction 0.25, this run has 0.3" in err


def _folder(root, with_test=True):
    for split, n in (("train", 6), ("val", 2)) + ((("test", 3),) if with_test else ()):
        for cls in ("happy", "sad"):
            for i in range(n):
                write_image(root / split / cls / f"{i}.png", size=32, seed=hash((split, cls, i)) % 1000)
    return root


def test_official_split_is_the_folders_val_beside_test(demo_root, tmp_path, capsys):
    root = _folder(tmp_path / "data")
    out = tmp_path / "run"
    train.cli(["--dataset", "folder", "--data-root", str(root), "--img-size", "32", "--batch-size", "4", "--workers", "0",
               "--no-progress", "--steps", "2", "--val-split", "official", "--output", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config["val_record"]["mode"] == "official" and config["val_record"]["count"] == 4
    assert "/ 4 validation images (the dataset's own)" in (out / "log.txt").read_text()
    metrics = test_script.cli([str(out / "last.pth"), "--split", "val", "--workers", "0", "--no-progress",
                               "--out-dir", str(tmp_path / "t")])
    assert read_metrics(out / "metrics.jsonl")[-1]["val_mean_acc"] == pytest.approx(metrics["mean_acc"])
    # val/ without test/ is the test split, and RAF-DB has no validation split: one line each
    for flags in (["--dataset", "folder", "--data-root", str(_folder(tmp_path / "v", with_test=False))],
                  ["--dataset", "raf-db", "--data-root", str(demo_root)]):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            train.cli([*flags, "--img-size", "32", "--workers", "0", "--steps", "1", "--val-split", "official",
                       "--output", str(tmp_path / "x"), "--dry-run"])
        err = capsys.readouterr().err
        assert err.startswith("error: --val-split official") and err.count("\n") == 1


def test_official_split_with_a_labelled_fraction_trains_on_the_labelled_part_only(tmp_path, monkeypatch):
    # 12 training images (6 a class), half keep their labels: 3 a class, 3 batches of 2 in the epoch.
    seen: dict[str, set] = {"train": set(), "val": set()}
    original = ImageListDataset.__getitem__

    def spy(self, key):
        image, label, used = original(self, key)
        kind = self.source.rsplit(":", 1)[-1]
        if kind in seen:
            seen[kind].add(self.samples[used].path)
        return image, label, used

    monkeypatch.setattr(ImageListDataset, "__getitem__", spy)
    root = _folder(tmp_path / "data")
    out = tmp_path / "run"
    train.cli(["--dataset", "folder", "--data-root", str(root), "--img-size", "32", "--batch-size", "2", "--workers", "0",
               "--no-progress", "--backbone", "test_resnet", "--method", "ce", "--epochs", "1", "--val-split", "official",
               "--labelled-fraction", "0.5", "--seed", "3", "--output", str(out)])
    full = build_dataset("folder", root, "train")
    labelled = {full.samples[i].path for i in balanced_fraction(full.targets, 0.5, 3, len(full.classes))}
    assert len(labelled) == 6 and seen["train"] == labelled  # every labelled image, and no other
    assert seen["val"] == {s.path for s in build_dataset("folder", root, "val").samples}
    config = json.loads((out / "config.json").read_text())
    assert config["train_counts"] == [3, 3] and config["labelled_record"]["count"] == 6
    assert config["val_record"]["mode"] == "official" and config["val_record"]["count"] == 4


def test_labelled_part_follows_seed_and_the_unlabelled_rest_is_every_other_image(demo_root):
    from data.loaders import labelled_indices, unlabelled_rest

    args = train.parse_args([*TINY, "--data-root", str(demo_root), "--labelled-fraction", "0.5", "--seed", "3",
                             "--output", "unused"])
    full = build_dataset("demo", demo_root, "train")
    labelled = labelled_indices(args, full)
    assert labelled == balanced_fraction(full.targets, 0.5, 3, 7) != balanced_fraction(full.targets, 0.5, 0, 7)
    labelled_paths = {full.samples[i].path for i in labelled}
    rest = unlabelled_rest(args)
    assert len(rest) == 64 and not set(rest) & labelled_paths  # none of them labelled ...
    assert set(rest) | labelled_paths == {s.path for s in full.samples}  # ... and all the others
    order = [s.path for s in full.samples]
    assert rest == sorted(rest, key=order.index)  # in list order


@pytest.mark.parametrize("flags, message", [
    (["--val-fraction", "1.0"], "--val-fraction must be in (0, 1), got 1.0"),
    (["--val-fraction", "0.1", "--val-split", "official"], "two validation splits; give one"),
    (["--labelled-fraction", "0"], "--labelled-fraction must be in (0, 1), got 0.0"),
])
def test_bad_split_flags_give_one_line_and_exit_2(flags, message, demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_train(demo_root, tmp_path / "out", "--steps", "1", *flags)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("error:") == 1 and not (tmp_path / "out").exists()
