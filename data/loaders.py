"""The data of a training run from its flags: the training, validation and test sets, the
resumable training sampler and the loaders (``train.py`` calls :func:`build_data`).

The validation split (``--val-fraction`` / ``--val-split official``, ``data/split.py``) is taken
out of the training set here, before any sampler sees it: no held-out image is ever in a
training batch.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader

from . import DATASETS, DEFAULT_ROOTS, build_dataset
from .base import ImageListDataset
from .errors import DatasetError
from .sampler import ResumableSampler, ShardSampler
from .split import split_record, stratified_holdout
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


def augment_config(args: argparse.Namespace) -> AugmentConfig:
    mean, std = NORMALISATIONS[args.norm]
    return AugmentConfig(
        img_size=args.img_size, mean=mean, std=std, scale=(args.scale_min, 1.0), hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.auto_augment, interpolation=args.interpolation,
        reprob=args.reprob, remode=args.remode, re_max_area=args.re_max_area,
        noise_prob=args.noise_prob, noise_var=args.noise_var,
    )


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
    train_set, val_set, args.val_record = build_val_split(args, root, train_set, build_eval_transform(aug), common)
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
    loader_kw = dict(num_workers=args.workers, pin_memory=args.device_type == "cuda",
                     persistent_workers=False, generator=torch.Generator().manual_seed(args.seed))
    # drop_last keeps every step's batch full (and BatchNorm away from batches of one).
    train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=train_sampler, drop_last=True, **loader_kw)
    test_loader, val_loader = (
        DataLoader(data, batch_size=args.eval_batch_size or 2 * args.batch_size,
                   sampler=ShardSampler(len(data), dist_info.rank, dist_info.world_size), **loader_kw)
        if data is not None else None for data in (test_set, val_set))
    return RunData(train_set, test_set, val_set, train_sampler, train_loader, test_loader, val_loader)


def val_origin(args: argparse.Namespace) -> str:
    return "the dataset's own" if args.val_split else f"{args.val_fraction:g} of the training images held out"


def build_val_split(args: argparse.Namespace, root: str, train_set, eval_transform, common: dict):
    """(training set, validation set or None, its config.json record or None): ``--val-fraction``
    holds out training images (never in a training batch), ``--val-split official`` reads the
    dataset's own validation split."""
    if args.val_split == "official":
        val_set = build_dataset(args.dataset, root, "val", eval_transform, **common)
        if val_set.classes != train_set.classes:
            raise DatasetError(f"train and validation classes differ: {train_set.classes} vs {val_set.classes}")
        record = split_record("official", None, args.seed, None, [s.path for s in val_set.samples], root,
                              val_set.source)
        return train_set, val_set, record
    if args.val_fraction is None:
        return train_set, None, None
    held = stratified_holdout(train_set.targets, args.val_fraction, args.seed)
    if not held:
        raise DatasetError(f"--val-fraction {args.val_fraction} holds out no image of {len(train_set)}; give a larger fraction")
    kept = sorted(set(range(len(train_set))) - set(held))
    val_set = train_set.subset(held, eval_transform, source=f"{train_set.source}:val")
    record = split_record("fraction", args.val_fraction, args.seed, held, [s.path for s in val_set.samples], root,
                          train_set.source)
    return train_set.subset(kept), val_set, record
