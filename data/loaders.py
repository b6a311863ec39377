"""The data of a training run from its flags: the training, validation and test sets, the
resumable training sampler and the loaders (``train.py`` calls :func:`build_data`).

The validation split (``--val-fraction`` / ``--val-split official``, ``data/split.py``) is taken
out of the training set here, before any sampler sees it: no held-out image is ever in a
training batch. ``--labelled-fraction`` keeps the labels of a class-balanced part of the training
set first; the validation split comes out of that part, and the rest is what Face2Exp's
``--unlabeled-rest`` streams without labels (:func:`unlabelled_rest`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader

from . import DATASETS, DEFAULT_ROOTS, build_dataset
from .base import ImageListDataset
from .errors import DatasetError
from .sampler import ResumableSampler, ShardSampler
from .split import balanced_fraction, fingerprint, split_record, stratified_holdout
from .label_modes import apply_label_mode
from .transforms import NORMALISATIONS, default_norm, AugmentConfig, build_eval_transform, build_train_transform


class RunData(NamedTuple):
    train_set: ImageListDataset
    test_set: ImageListDataset
    val_set: ImageListDataset | None
    train_sampler: object
    train_loader: DataLoader
    test_loader: DataLoader
    val_loader: DataLoader | None


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """train.py's "data" and "augmentation" flag groups (their checks: :func:`check_data_args`)."""
    from . import LABEL_MODES
    from .align import add_align_arg

    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="raf-db",
                   help="raf-db | folder | ferplus | ferplus-private | affectnet | demo (registry: data/__init__.py)")
    g.add_argument("--data-root", default=None, help="dataset root (default: dataset/raf-basic or dataset/demo)")
    g.add_argument("--label-file", default=None, help="alternative training label list, same format as RAF-DB's")
    g.add_argument("--num-classes", type=int, default=None, help="keep the first N canonical classes (e.g. 7 drops contempt)")
    g.add_argument("--ferplus-labels", choices=LABEL_MODES, default="majority", help="FERPlus training targets (default: %(default)s; docs/datasets.md)")
    g.add_argument("--img-size", type=int, default=224)
    add_align_arg(g)  # --align TEMPLATE: the training faces' framing, recorded in the checkpoint
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: data/loaders.py loader_workers)")
    g.add_argument("--cache-images", action="store_true", help="decode every image once into memory")
    g.add_argument("--skip-bad-images", action="store_true", help="log and skip unreadable images instead of stopping")
    g.add_argument("--balanced-sampler", action="store_true",
                   help="class-balanced labelled batches: every class equally likely (data/balanced_sampler.py)")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this stratified, seeded fraction of the training images as a validation split: "
                        "best.pth is chosen on it, the test split is only reported (data/split.py)")
    g.add_argument("--val-split", choices=["official"], default=None,
                   help="official: the dataset's own validation split (a folder's val/ beside test/, "
                        "ferplus-private's FER2013Valid) chooses best.pth")
    g.add_argument("--labelled-fraction", type=float, default=None, help="keep the labels of this class-balanced, "
                   "seeded fraction of the training images (validation comes out of it; data/split.py)")

    g = parser.add_argument_group("augmentation")
    g.add_argument("--norm", choices=sorted(NORMALISATIONS), default=None, help="mean/std (default: the backbone's)")
    g.add_argument("--scale-min", type=float, default=1.0, help="random-resized-crop area minimum (1 = plain resize)")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--color-jitter", type=float, default=0.0, help="(ignored by timm when --auto-augment is set)")
    g.add_argument("--auto-augment", default=None, help="timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1")
    g.add_argument("--interpolation", choices=["bilinear", "bicubic"], default="bilinear")
    g.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    g.add_argument("--remode", choices=["const", "pixel"], default="const")
    g.add_argument("--re-max-area", type=float, default=0.25, help="random erasing maximum area fraction")
    g.add_argument("--batch-augment", action="store_true",
                   help="augment whole batches of uint8 faces on the training device (crop, rotation, flip, erasing "
                        "in one affine resampling; data/batch_augment.py) instead of per image with PIL in the loader")
    g.add_argument("--noise-prob", type=float, default=0.0,
                   help="Gaussian pixel noise with this probability (EAC's and RUL's add_g: 0.5)")
    g.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                   help="random rotation in [-DEG, DEG] degrees before the crop (0 = off)")
    g.add_argument("--noise-var", type=float, default=30.0, help="its variance in 0-255 pixel units (official: 30)")


def augment_config(args: argparse.Namespace) -> AugmentConfig:
    mean, std = NORMALISATIONS[args.norm]
    return AugmentConfig(
        img_size=args.img_size, mean=mean, std=std, scale=(args.scale_min, 1.0), hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.auto_augment, interpolation=args.interpolation,
        reprob=args.reprob, remode=args.remode, re_max_area=args.re_max_area,
        noise_prob=args.noise_prob, noise_var=args.noise_var, rotate=getattr(args, "rotate", 0.0),
    )


def check_data_args(args: argparse.Namespace) -> None:
    """The data flags' ranges and combinations (DatasetError naming the flag)."""
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        raise DatasetError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.val_fraction is not None and args.val_split:
        raise DatasetError("--val-fraction and --val-split official are two validation splits; give one")
    fraction = getattr(args, "labelled_fraction", None)
    if fraction is not None and not 0 < fraction < 1:
        raise DatasetError(f"--labelled-fraction must be in (0, 1), got {fraction}")


def labelled_indices(args: argparse.Namespace, train_set) -> list[int] | None:
    """``--labelled-fraction``: indices of the training images whose labels the run uses (None: all)."""
    fraction = getattr(args, "labelled_fraction", None)
    if fraction is None:
        return None
    return balanced_fraction(train_set.targets, fraction, args.seed, len(train_set.classes))


def unlabelled_rest(args: argparse.Namespace) -> list[Path]:
    """The training images ``--labelled-fraction`` leaves without labels, in list order: the same
    list and the same seeded choice as :func:`build_data` makes (their labels are never used)."""
    train_set = build_dataset(args.dataset, args.data_root, "train", None, label_file=args.label_file,
                              num_classes=args.num_classes, skip_bad_images=args.skip_bad_images)
    labelled = labelled_indices(args, train_set)
    kept = set(range(len(train_set)) if labelled is None else labelled)
    return [s.path for i, s in enumerate(train_set.samples) if i not in kept]


def build_data(args: argparse.Namespace, dist_info) -> RunData:
    """The run's datasets and loaders from its flags (``args.data_root``, ``args.val_record`` and, when
    not given, ``args.norm`` (the backbone's input convention) are set)."""
    args.norm = args.norm or default_norm(args.backbone)
    aug = augment_config(args)
    DATASETS.lookup(args.dataset)  # DatasetError naming the known datasets
    root = args.data_root or DEFAULT_ROOTS.get(args.dataset)
    if root is None:
        raise DatasetError(f"--data-root is required for --dataset {args.dataset}")
    args.data_root = root
    common = dict(num_classes=args.num_classes, skip_bad_images=args.skip_bad_images)
    train_set = build_dataset(args.dataset, root, "train", build_train_transform(aug), label_file=args.label_file, **common)
    test_set = build_dataset(args.dataset, root, "test", build_eval_transform(aug), **common)
    if test_set.classes != train_set.classes:
        raise DatasetError(f"train and test classes differ: {train_set.classes} vs {test_set.classes}")
    labelled = labelled_indices(args, train_set)
    args.labelled_record = None if labelled is None else {
        "fraction": args.labelled_fraction, "seed": args.seed, "count": len(labelled),
        "per_class": train_set.subset(labelled).class_counts(),
        "sha1": fingerprint([train_set.samples[i].path for i in labelled], root)}
    train_set, val_set, args.val_record = build_val_split(args, root, train_set, build_eval_transform(aug), common,
                                                          labelled)
    # FERPlus's label modes change the training targets only (after the split: validation keeps majority labels).
    train_set = apply_label_mode(train_set, getattr(args, "ferplus_labels", "majority"))
    if args.skip_bad_images and not args.dry_run:
        train_set.bad_image_log = test_set.bad_image_log = Path(args.output) / "bad_images.tsv"
        if val_set is not None:
            val_set.bad_image_log = train_set.bad_image_log
    if args.cache_images:
        for dataset in (train_set, test_set, val_set):
            if dataset is not None:
                dataset.cache_images()

    if args.balanced_sampler:
        from .balanced_sampler import BalancedSampler

        if args.batch_size < len(train_set.classes):
            raise DatasetError(f"--balanced-sampler needs --batch-size >= the number of classes ({len(train_set.classes)}) "
                       f"for one balanced batch, got {args.batch_size}")
        train_sampler = BalancedSampler(train_set.targets, len(train_set.classes), args.seed, dist_info.rank,
                                        dist_info.world_size)
    else:
        train_sampler = ResumableSampler(len(train_set), args.seed, True, dist_info.rank, dist_info.world_size)
    args.workers = loader_workers(args.workers, args.device_type)
    # Persistent workers: started once, not again for every epoch and every evaluation (augmentation
    # is seeded per sample by the sampler, so a worker's own generators do not matter).
    loader_kw = dict(num_workers=args.workers, pin_memory=args.device_type == "cuda",
                     persistent_workers=args.workers > 0, generator=torch.Generator().manual_seed(args.seed))
    # drop_last keeps every step's batch full (and BatchNorm away from batches of one).
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler, drop_last=True, **loader_kw)
    test_loader, val_loader = (
        DataLoader(data, batch_size=args.eval_batch_size or 2 * args.batch_size,
                   sampler=ShardSampler(len(data), dist_info.rank, dist_info.world_size), **loader_kw)
        if data is not None else None for data in (test_set, val_set))
    return RunData(train_set, test_set, val_set, train_sampler, train_loader, test_loader, val_loader)


MAX_AUTO_WORKERS = 16


def loader_workers(requested: int | None, device_type: str) -> int:
    """``--workers``, or when not given: 2 on a CPU run (the workers share the cores with the
    training itself), and on a GPU the cores this process may use, shared between the processes
    on this machine (torchrun's LOCAL_WORLD_SIZE), less one for the training process, between 2
    and 16."""
    if requested is not None:
        return requested
    if device_type != "cuda":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(2, min(MAX_AUTO_WORKERS, per_process - 1))


def val_origin(args: argparse.Namespace) -> str:
    return "the dataset's own" if args.val_split else f"{args.val_fraction:g} of the training images held out"


def build_val_split(args: argparse.Namespace, root: str, train_set, eval_transform, common: dict,
                    labelled: list[int] | None = None):
    """(training set, validation set or None, its config.json record or None): ``--val-fraction``
    holds out training images (never in a training batch), ``--val-split official`` reads the
    dataset's own validation split. With ``labelled`` (``--labelled-fraction``'s indices) both the
    training and the held-out images come from those; the record's indices index ``train_set``."""
    candidates = list(range(len(train_set))) if labelled is None else labelled
    labelled_set = train_set if labelled is None else train_set.subset(labelled)
    if args.val_split == "official":
        val_set = build_dataset(args.dataset, root, "val", eval_transform, **common)
        if val_set.classes != train_set.classes:
            raise DatasetError(f"train and validation classes differ: {train_set.classes} vs {val_set.classes}")
        record = split_record("official", None, args.seed, None, [s.path for s in val_set.samples], root,
                              val_set.source)
        return labelled_set, val_set, record
    if args.val_fraction is None:
        return labelled_set, None, None
    targets = train_set.targets
    held = [candidates[j] for j in stratified_holdout([targets[i] for i in candidates], args.val_fraction, args.seed)]
    if not held:
        raise DatasetError(f"--val-fraction {args.val_fraction} holds out no image of {len(candidates)}; give a larger fraction")
    kept = sorted(set(candidates) - set(held))
    val_set = train_set.subset(held, eval_transform, source=f"{train_set.source}:val")
    record = split_record("fraction", args.val_fraction, args.seed, held, [s.path for s in val_set.samples], root,
                          train_set.source)
    return train_set.subset(kept), val_set, record
