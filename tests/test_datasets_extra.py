"""FERPlus, AffectNet and FER2013 (folder) loaders on tiny generated fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

import train
from conftest import write_image
from data import DatasetError, build_dataset
from data.classes import CANONICAL_CLASSES
from data.ferplus import majority_vote

# ------------------------------------------------------------------------------------- FERPlus

FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
# (usage, image name, votes in header order, canonical label expected or None when dropped)
FERPLUS_ROWS = [
    ("Training", "fer0000000.png", "4,0,0,1,3,2,0,0,0,0", 6),  # neutral
    ("Training", "fer0000001.png", "0,10,0,0,0,0,0,0,0,0", 3),  # happiness
    ("Training", "fer0000002.png", "5,5,0,0,0,0,0,0,0,0", None),  # tie between two emotions
    ("Training", "fer0000003.png", "0,0,0,0,0,0,0,6,4,0", 7),  # contempt (dropped with 7 classes)
    ("Training", "fer0000004.png", "2,0,0,0,0,0,0,0,5,3", None),  # unknown has the most votes
    ("Training", "fer0000005.png", "3,0,0,0,0,0,0,0,0,3", None),  # NF ties the top emotion
    ("Training", "", "0,0,0,0,0,0,0,0,0,10", None),  # image removed by FERPlus: no name
    ("Training", "fer0000007.png", "0,0,7,0,0,0,3,0,0,0", 0),  # surprise
    ("Training", "fer0000008.png", "0,0,0,0,0,0,8,0,2,0", 1),  # fear
    ("Training", "fer0000009.png", "1,0,0,0,0,9,0,0,0,0", 2),  # disgust
    ("Training", "fer0000010.png", "0,0,0,6,4,0,0,0,0,0", 4),  # sadness
    ("Training", "fer0000011.png", "0,0,0,0,7,0,0,0,3,0", 5),  # anger
    ("PublicTest", "fer0028638.png", "0,9,0,0,0,0,0,0,1,0", 3),  # happiness
    ("PublicTest", "fer0028639.png", "1,0,0,1,0,2,0,6,0,0", 7),  # contempt
    ("PrivateTest", "fer0032220.png", "0,0,0,8,0,0,0,0,2,0", 4),  # sadness
    ("PrivateTest", "fer0032221.png", "10,0,0,0,0,0,0,0,0,0", 6),  # neutral
]
FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def expected(usage: str, num_classes: int = 8) -> tuple[list[str], list[int]]:
    rows = [(n, y) for u, n, _, y in FERPLUS_ROWS if u == usage and y is not None and y < num_classes]
    return [n for n, _ in rows], [y for _, y in rows]


def make_ferplus(root: Path, images: bool = True) -> Path:
    lines = [FERPLUS_HEADER] + [f"{u},{n},{v}" for u, n, v, _ in FERPLUS_ROWS]
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    for i, (usage, name, _, _) in enumerate(FERPLUS_ROWS):
        if name and images:
            write_image(root / FOLDERS[usage] / name, size=48, seed=i, mode="L")
    return root


@pytest.mark.parametrize(
    "votes,winner",
    [
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], 0),
        ([0, 0, 0, 0, 0, 0, 0, 6, 4, 0], 7),
        ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None),  # tie
        ([2, 0, 0, 0, 0, 0, 0, 0, 5, 3], None),  # unknown wins
        ([3, 0, 0, 0, 0, 0, 0, 0, 3, 0], None),  # unknown ties
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], None),  # not a face
        ([0] * 10, None),
    ],
)
def test_ferplus_majority_vote_rule(votes, winner):
    assert majority_vote(votes) == winner


def test_ferplus_csv_majority_labels_8_and_7_classes(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    train8 = build_dataset("ferplus", root, "train")
    names, labels = expected("Training")
    assert train8.classes == list(CANONICAL_CLASSES)
    assert [s.path.name for s in train8.samples] == names and train8.targets == labels
    assert train8.targets == [6, 3, 7, 0, 1, 2, 4, 5]  # hand-checked against the table above
    assert all(s.path.parent.name == "FER2013Train" for s in train8.samples)
    assert train8.class_counts() == [1] * 8

    train7 = build_dataset("ferplus", root, "train", num_classes=7)
    assert train7.classes == list(CANONICAL_CLASSES[:7]) and "contempt" not in train7.classes
    assert train7.targets == [6, 3, 0, 1, 2, 4, 5]
    image, label, _ = train7[0]
    assert image.mode == "RGB" and image.size == (48, 48) and label == 6

    with pytest.raises(DatasetError, match="--num-classes 6 does not apply"):
        build_dataset("ferplus", root, "train", num_classes=6)


def test_ferplus_csv_split_selection(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    public = build_dataset("ferplus", root, "test")
    assert [s.path.parent.name for s in public.samples] == ["FER2013Valid"] * 2
    assert public.targets == [3, 7] and build_dataset("ferplus", root, "test", num_classes=7).targets == [3]
    private = build_dataset("ferplus-private", root, "test")
    assert [s.path.name for s in private.samples] == expected("PrivateTest")[0]
    assert [s.path.parent.name for s in private.samples] == ["FER2013Test"] * 2 and private.targets == [4, 6]
    # The private variant trains on the same Training rows.
    assert build_dataset("ferplus-private", root, "train").targets == build_dataset("ferplus", root, "train").targets


def test_ferplus_per_folder_label_files(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    (root / "fer2013new.csv").unlink()
    # As written by Microsoft's generate_training_data.py: no header, no Usage; one with a face box.
    for usage, folder in FOLDERS.items():
        rows = [(n, v) for u, n, v, _ in FERPLUS_ROWS if u == usage and n]
        box = ',"(0, 0, 48, 48)"' if usage == "PublicTest" else ""
        (root / folder / "label.csv").write_text("".join(f"{n}{box},{v}\n" for n, v in rows))
    assert build_dataset("ferplus", root, "train").targets == expected("Training")[1]
    assert build_dataset("ferplus", root, "test").targets == [3, 7]
    assert build_dataset("ferplus-private", root, "test", num_classes=7).targets == [4, 6]
    (root / "FER2013Train" / "label.csv").write_text("fer0000000.png,1,2,3\n")
    with pytest.raises(DatasetError, match=r"FER2013Train/label.csv:1: expected 'image name"):
        build_dataset("ferplus", root, "train")


def test_ferplus_image_folder_release(tmp_path):
    root = tmp_path / "ferplus_folders"
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for folder in ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"):
            for i in range(n):
                write_image(root / split / folder / f"{split}{i}.png", size=8, seed=i, mode="L")
    write_image(root / "test" / "happiness" / "extra.png", size=8, mode="L")
    train8 = build_dataset("ferplus", root, "train")
    assert train8.classes == list(CANONICAL_CLASSES) and train8.class_counts() == [2] * 8
    assert build_dataset("ferplus", root, "train", num_classes=7).class_counts() == [2] * 7
    public = build_dataset("ferplus", root, "test")
    assert len(public) == 8 and all(s.path.parent.parent.name == "val" for s in public.samples)
    private = build_dataset("ferplus-private", root, "test", num_classes=7)
    assert len(private) == 8 and all(s.path.parent.parent.name == "test" for s in private.samples)
    assert private.class_counts()[3] == 2  # happiness/extra.png


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.replace(",NF", ""), r"fer2013new.csv:1: missing column\(s\) NF"),
        (lambda t: t.replace("fer0000001.png,0,10,", "fer0000001.png,0,"), r"fer2013new.csv:3: expected 12 comma-separated fields, got 11"),
        (lambda t: t.replace("fer0000000.png,4,", "fer0000000.png,x,"), r"fer2013new.csv:2: neutral vote 'x' is not a number"),
        (lambda t: t.replace("fer0000000.png,4,", "fer0000000.png,-4,"), r"fer2013new.csv:2: neutral vote '-4' is not a count"),
        (lambda t: t.replace("PrivateTest,fer0032221", "Validation,fer0032221"), r"fer2013new.csv:17: unknown Usage 'Validation'"),
        (lambda t: "", r"fer2013new.csv:1: empty file"),
    ],
)
def test_ferplus_bad_rows_name_file_and_line(tmp_path, edit, message):
    root = make_ferplus(tmp_path / "ferplus", images=False)
    csv_file = root / "fer2013new.csv"
    csv_file.write_text(edit(csv_file.read_text()))
    with pytest.raises(DatasetError, match=message):
        build_dataset("ferplus", root, "train")


def test_ferplus_missing_labels_and_root(tmp_path):
    with pytest.raises(DatasetError, match="FERPlus root not found"):
        build_dataset("ferplus", tmp_path / "nowhere", "train")
    (tmp_path / "empty" / "FER2013Train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no FERPlus labels under .*fer2013new.csv"):
        build_dataset("ferplus", tmp_path / "empty", "train")
    root = make_ferplus(tmp_path / "ferplus")
    with pytest.raises(DatasetError, match="FERPlus label file not found: .*other.csv"):
        build_dataset("ferplus", root, "train", label_file=tmp_path / "other.csv")


def test_ferplus_label_file_replaces_training_labels_only(tmp_path):
    root = make_ferplus(tmp_path / "ferplus")
    other = tmp_path / "relabelled.csv"
    other.write_text(f"{FERPLUS_HEADER}\nTraining,fer0000000.png,0,0,0,0,0,9,0,0,1,0\n")
    assert build_dataset("ferplus", root, "train", label_file=other).targets == [2]
    assert build_dataset("ferplus", root, "test", label_file=other).targets == [3, 7]


# ------------------------------------------------------------------------------------ AffectNet

AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
# Hand-written: AffectNet code -> canonical class name (0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear,
# 5 Disgust, 6 Anger, 7 Contempt).
AFFECTNET_NAMES = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt"}
AFFECTNET_TO_INDEX = {0: 6, 1: 3, 2: 4, 3: 0, 4: 1, 5: 2, 6: 5, 7: 7}
CODES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1]


def csv_row(path: str, code: int) -> str:
    return f'{path},10,12,100,100,"1.5;2.5;3.5;4.5",{code},0.25,-0.5'


def make_affectnet_csv(root: Path, header: bool = True, images: bool = True) -> Path:
    images_dir = root / "Manually_Annotated_Images"
    for name, split in (("training.csv", "tr"), ("validation.csv", "va")):
        rows = [csv_row(f"{i % 3}/{split}{i:03d}.jpg", code) for i, code in enumerate(CODES)]
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(([AFFECTNET_HEADER] if header else []) + rows) + "\n")
        for i, code in enumerate(CODES):
            if images and code <= 7:
                write_image(images_dir / f"{i % 3}" / f"{split}{i:03d}.jpg", size=8, seed=i)
    return root


def test_affectnet_csv_8_and_7_classes_map_to_canonical_order(tmp_path):
    root = make_affectnet_csv(tmp_path / "affectnet")
    train8 = build_dataset("affectnet", root, "train")
    assert train8.classes == list(CANONICAL_CLASSES)
    kept = [c for c in CODES if c <= 7]  # None/Uncertain/No-Face (8, 9, 10) dropped
    assert train8.targets == [AFFECTNET_TO_INDEX[c] for c in kept] == [6, 3, 4, 0, 1, 2, 5, 7, 3]
    assert [train8.classes[y] for y in train8.targets] == [AFFECTNET_NAMES[c] for c in kept]
    assert train8.samples[0].path == root / "Manually_Annotated_Images" / "0" / "tr000.jpg"
    assert train8[0][0].mode == "RGB"
    train7 = build_dataset("affectnet", root, "train", num_classes=7)
    assert train7.classes == list(CANONICAL_CLASSES[:7]) and train7.targets == [6, 3, 4, 0, 1, 2, 5, 3]
    test = build_dataset("affectnet", root, "test")  # validation.csv is the test split
    assert [s.path.name for s in test.samples][:2] == ["va000.jpg", "va001.jpg"] and len(test) == 9
    with pytest.raises(DatasetError, match="--num-classes 9 does not apply"):
        build_dataset("affectnet", root, "train", num_classes=9)


def test_affectnet_csv_without_header_and_columns_by_name(tmp_path):
    root = make_affectnet_csv(tmp_path / "affectnet", header=False)
    assert build_dataset("affectnet", root, "test", num_classes=7).targets == [6, 3, 4, 0, 1, 2, 5, 3]
    # Columns are found by name, in any order; extra columns are fine.
    (root / "training.csv").write_text("expression,extra,subDirectory_filePath\n3,x,0/tr000.jpg\n7,y,1/tr001.jpg\n")
    assert build_dataset("affectnet", root, "train").targets == [0, 7]


def test_affectnet_lists(tmp_path):
    root = tmp_path / "affectnet_lists"
    for i in range(4):
        write_image(root / "train" / f"{i}.jpg", size=8, seed=i)
        write_image(root / "val" / f"{i}.jpg", size=8, seed=i)
    (root / "train.txt").write_text("path label\ntrain/0.jpg 3\ntrain/1.jpg 7\n\ntrain/2.jpg 9\ntrain/3.jpg 6\n")
    (root / "val.txt").write_text("val/0.jpg,0\nval/1.jpg,10\nval/2.jpg,5\nval/3.jpg,8\n")
    train8 = build_dataset("affectnet", root, "train")
    assert train8.targets == [0, 7, 5] and [train8.classes[y] for y in train8.targets] == ["surprise", "contempt", "anger"]
    assert train8.samples[0].path == root / "train" / "0.jpg"
    assert build_dataset("affectnet", root, "train", num_classes=7).targets == [0, 5]
    test = build_dataset("affectnet", root, "test")
    assert test.targets == [6, 2] and [s.path.name for s in test.samples] == ["0.jpg", "2.jpg"]
    (root / "val.txt").rename(root / "test.txt")  # test.txt is accepted as well
    assert build_dataset("affectnet", root, "test").targets == [6, 2]
    noisy = tmp_path / "noisy.txt"
    noisy.write_text("train/0.jpg 1\n")
    assert build_dataset("affectnet", root, "train", label_file=noisy).targets == [3]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("training.csv", f"{AFFECTNET_HEADER}\n{csv_row('0/a.jpg', 1)}\n{csv_row('0/b.jpg', 11)}\n",
         r"training.csv:3: expression 11 is outside AffectNet's 0..10"),
        ("training.csv", f"{AFFECTNET_HEADER}\n{csv_row('0/a.jpg', 1).replace(',1,0.25', ',happy,0.25')}\n",
         r"training.csv:2: expression 'happy' is not an integer"),
        ("training.csv", AFFECTNET_HEADER.replace(",expression", ",emotion") + f"\n{csv_row('0/a.jpg', 1)}\n",
         r"training.csv:1: missing column\(s\) expression"),
        ("training.csv", f"{AFFECTNET_HEADER}\n{csv_row('0/a.jpg', 1)}\n0/b.jpg,1,2\n",
         r"training.csv:3: expected 9 comma-separated fields, got 3"),
        ("training.csv", f"{AFFECTNET_HEADER}\n{csv_row('', 1)}\n", r"training.csv:2: empty image path"),
        ("train.txt", "a.jpg 1\nb.jpg\n", r"train.txt:2: expected 'image_path label'"),
        ("train.txt", "a.jpg 1\nb.jpg -1\n", r"train.txt:2: expression -1 is outside"),
        ("train.txt", "a.jpg 1\n\nb.jpg sad\n", r"train.txt:3: expression 'sad' is not an integer"),
    ],
)
def test_affectnet_bad_rows_name_file_and_line(tmp_path, name, content, message):
    root = tmp_path / "affectnet"
    root.mkdir()
    (root / name).write_text(content)
    with pytest.raises(DatasetError, match=message):
        build_dataset("affectnet", root, "train")


def test_affectnet_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="AffectNet root not found"):
        build_dataset("affectnet", tmp_path / "nowhere", "train")
    root = tmp_path / "affectnet"
    root.mkdir()
    (root / "train.txt").write_text("a.jpg 1\n")
    with pytest.raises(DatasetError, match="AffectNet test labels not found: expected validation.csv or val.txt or test.txt"):
        build_dataset("affectnet", root, "test")
    (root / "val.txt").write_text("a.jpg 8\nb.jpg 9\n")
    with pytest.raises(DatasetError, match="val.txt: no sample with an expression"):
        build_dataset("affectnet", root, "test")


# ------------------------------------------------------------------------ FER2013 (image folders)

FER2013_FOLDERS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_fer2013_grayscale_folder_release_loads_as_rgb_in_canonical_order(tmp_path):
    root = tmp_path / "fer2013"
    for split in ("train", "test"):
        for i, folder in enumerate(FER2013_FOLDERS):
            write_image(root / split / folder / f"{split}_{i}.png", size=48, seed=i, mode="L")
    train_set = build_dataset("folder", root, "train")
    assert train_set.classes == ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
    by_folder = {s.path.parent.name: s.label for s in train_set.samples}
    assert by_folder == {"surprise": 0, "fear": 1, "disgust": 2, "happy": 3, "sad": 4, "angry": 5, "neutral": 6}
    image, label, index = train_set[0]
    assert image.mode == "RGB" and image.size == (48, 48)
    assert label == train_set.samples[index].label
    assert len(build_dataset("folder", root, "test")) == 7


# ----------------------------------------------------------------------------- through train.py

@pytest.mark.parametrize("dataset,num_classes", [("ferplus", 8), ("affectnet", 7)])
def test_dry_run_reports_counts_and_weights(tmp_path, capsys, dataset, num_classes):
    root = make_ferplus(tmp_path / "ferplus") if dataset == "ferplus" else make_affectnet_csv(tmp_path / "affectnet")
    train.cli(["--dataset", dataset, "--data-root", str(root), "--img-size", "32", "--workers", "0", "--dry-run",
               "--batch-size", "4", "--num-classes", str(num_classes), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert f"dataset {dataset} at {root}" in out
    counts = "surprise=1, fear=1, disgust=1, happiness=1, sadness=1, anger=1, neutral=1"
    if dataset == "ferplus":
        assert f"train counts: {counts}, contempt=1" in out
    else:
        assert "train counts: surprise=1, fear=1, disgust=1, happiness=2, sadness=1, anger=1, neutral=1\n" in out
    assert "class weights N/(10 n_k): surprise=" in out and f"{num_classes} classes" in out
    assert "dry run: one batch of (4, 3, 32, 32)" in out
