"""Evaluate a checkpoint: overall, mean-class and per-class accuracy, confusion matrix.

    python test.py output/mek_r18/best.pth [--dataset raf-db --data-root DIR --split test]

The model and the evaluation settings (dataset, image size, normalisation, precision, batch
size) come from the checkpoint, so the numbers equal those train.py logged for it. Writes
``confusion_matrix.png`` and ``predictions.csv`` next to the checkpoint (or to --output).

Cross-dataset: ``--dataset``/``--data-root`` of another dataset (a folder root may hold only
``test/`` or ``val/``) whose classes may differ. Evaluation is on the classes both have: images of
classes the model lacks are removed (counted and named), the logits of model classes the data
lacks are ignored (prediction = argmax over the shared classes' logits), and every metric is over
the shared classes (``cross_dataset`` in the metrics JSON says what was dropped).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import engine
from data.label_modes import vote_counts
from data import DatasetError, ImageListDataset, Sample, build_dataset
from data.split import fingerprint
from data.transforms import NORMALISATIONS, AugmentConfig, build_eval_transform
from methods import method_from_config
from models import build_model_from_config
from utils.checkpoint import CheckpointError, check_model_fits, inference_weights, load_checkpoint
from utils.device import resolve_device
from utils.logging import error_exit, worker_error_message
from utils.metrics import evaluation_metrics


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("test.py", description="Evaluate a checkpoint of any method on a dataset split",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="a .pth written by train.py (best.pth or last.pth)")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's")
    p.add_argument("--data-root", default=None, help="default: the checkpoint's")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="val: the run's validation split (--val-fraction: the held-out training images, rebuilt "
                        "from config.json; --val-split official: the dataset's own)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the checkpoint's eval batch size")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"], default=None, help="default: the checkpoint's")
    p.add_argument("--align", default="auto",
                   help="face framing of raw images: auto = align to the checkpoint's template (its --align) when "
                        "the data is not the checkpoint's own and its align.json does not name that template; none; "
                        "or a data/align.py template to apply")
    p.add_argument("--output", "--out-dir", dest="output", default=None,
                   help="where to write the figure and CSV (default: next to the checkpoint; --out-dir: the old name)")
    p.add_argument("--tta", choices=engine.TTA_MODES, default=None,
                   help="test-time augmentation (flip: mean softmax of each face and its mirror); default: the run's")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--network", default=None,
                   help="which network of the checkpoint: the main one (default; Face2Exp's student; a --ema run's "
                        "weight average), online (a --ema run's trained weights) or a saved extra one, e.g. teacher")
    return p


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (each true class's recall on the diagonal), scikit-learn's display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(matrix, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(classes), 0.6 + 0.8 * len(classes)))
    ConfusionMatrixDisplay(rows, display_labels=classes).plot(ax=ax, cmap="Blues", values_format=".0%",
                                                              xticks_rotation=45, im_kw={"vmin": 0, "vmax": 1})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shared_class_subset(data, model_classes: list[str], where: str):
    """``data`` restricted to the classes the model also has, labels renumbered in the dataset's order.

    Returns (data, model logit index of each shared class or None when the class sets are equal,
    a summary for the report or None).
    """
    if data.classes == model_classes:
        return data, None, None
    shared = [c for c in data.classes if c in model_classes]
    if not shared:
        error_exit(f"{where} has classes {data.classes}, none of which the checkpoint has ({model_classes})")
    counts = data.class_counts()
    dropped = {c: n for c, n in zip(data.classes, counts) if c not in model_classes}
    samples = [Sample(s.path, shared.index(data.classes[s.label])) for s in data.samples
               if data.classes[s.label] in model_classes]
    if not samples:
        error_exit(f"{where}: no images of the shared classes {shared}")
    subset = ImageListDataset(samples, shared, data.transform, skip_bad_images=data.skip_bad_images, source=data.source)
    cross = {"shared_classes": shared, "dropped_dataset_classes": dropped,
             "excluded_model_classes": [c for c in model_classes if c not in data.classes],
             "images_removed": sum(dropped.values()), "images_total": len(data),
             "prediction": "argmax over the shared classes' logits"}
    return subset, [model_classes.index(c) for c in shared], cross


def load_split(args: argparse.Namespace, config: dict, dataset: str, data_root: str, transform, same_data: bool):
    """The split to evaluate; ``val`` is the run's own validation split, exactly as training held it out."""
    num_classes = config.get("num_classes") if same_data else None
    record = config.get("val_record")
    if args.split != "val" or (record or {}).get("mode") == "official":
        if args.split == "val" and not same_data:
            error_exit("--split val is the run's validation split; it needs the checkpoint's own dataset")
        return build_dataset(dataset, data_root, args.split, transform, num_classes=num_classes)
    if not record or not same_data:
        error_exit(f"{args.checkpoint} was trained without a validation split (--val-fraction / --val-split); "
                   "evaluate --split test")
    train_set = build_dataset(dataset, data_root, "train", transform, label_file=config.get("label_file"),
                              num_classes=num_classes)
    held = record["indices"]
    if max(held) >= len(train_set) or fingerprint([train_set.samples[i].path for i in held], data_root) != record["sha1"]:
        error_exit(f"{data_root}'s training list differs from the one {args.checkpoint} was trained on; "
                   "its validation images cannot be rebuilt")
    return train_set.subset(held, transform, source=f"{train_set.source}:val")


def evaluation_framing(choice: str, trained: str | None, data_root: str, same_data: bool) -> tuple[str | None, str]:
    """(template to apply to each image or None, the log line) for ``--align``."""
    from data.align import TEMPLATES, recorded_template

    if choice not in ("auto", "none", *TEMPLATES):
        error_exit(f"--align {choice}: unknown; use auto, none or one of {', '.join(TEMPLATES)}")
    prepared = recorded_template(data_root) if Path(data_root).is_dir() else None
    if choice == "none":
        return None, "framing: images used as they are (--align none)"
    if choice != "auto":
        return choice, f"framing: every image aligned to {choice} (--align; Haar box, then the whole image, where dlib finds no face)"
    if not trained:
        return None, "framing: images used as they are (the checkpoint records no alignment)"
    if same_data or prepared == trained:
        why = "the checkpoint's own data" if same_data else f"{data_root}/align.json says {trained}"
        return None, f"framing: images used as they are ({why})"
    return trained, (f"framing: every image aligned to {trained}, the checkpoint's framing (Haar box, then the whole "
                     "image, where dlib finds no face; --align none to use the images as they are)")


def selection_note(state: dict, path: Path) -> list[str]:
    """What chose best.pth, and the test result at the last evaluation beside it (from last.pth)."""
    best = state.get("best") or {}
    if best.get("selected_on") != "val":
        return ["note: best.pth was selected on this test split (as in the papers: RAF-DB has no validation split), "
                "so it is optimistic; compare methods on last.pth"]
    lines = [f"note: best.pth was chosen on validation mean class accuracy (step {best['step']}, "
             f"{best['score'] * 100:.2f}); this is the test result at the validation-chosen step"]
    last_path = path.with_name("last.pth")
    last = load_checkpoint(last_path) if last_path.is_file() else {}
    if last.get("metrics"):
        m = last["metrics"]
        lines.append(f"test at the last evaluation (last.pth, step {last['progress']['step']}): overall "
                     f"{m['overall_acc'] * 100:.2f}  mean class accuracy {m['mean_acc'] * 100:.2f}  "
                     f"macro-F1 {m['macro_f1'] * 100:.2f}")
    return lines


def main(args: argparse.Namespace) -> dict:
    state = load_checkpoint(args.checkpoint)
    model_config, config = state["model_config"], state.get("config", {})
    # The averaged model of a --ema run (utils/ema.py) unless --network online asks for the trained one.
    weights, which = inference_weights(state)
    networks = state.get("networks", {})
    if args.network == "online":
        if which != "ema":
            error_exit(f"{args.checkpoint} was trained without --ema: it holds one model, there is no 'online' one")
        weights, which = state["model"], "model"
    elif args.network not in (None, "student", "model"):
        if args.network not in networks:
            have = ", ".join(["student" if networks else "model", *(["online"] if which == "ema" else []), *networks])
            error_exit(f"{args.checkpoint} has no network {args.network!r}; it holds: {have}")
        model_config, weights = networks[args.network]["model_config"], networks[args.network]["model"]
    device = resolve_device(args.device)
    amp = args.amp or config.get("amp", "off")
    if amp == "fp16" and device.type != "cuda":
        amp = "off"
    # The method's prediction rule (post-hoc logit adjustment changes the argmax).
    eval_logits = method_from_config(config).eval_logits if config.get("train_counts") else None
    dataset = args.dataset or config.get("dataset")
    data_root = args.data_root or config.get("data_root")
    if not dataset or not data_root:
        error_exit(f"{args.checkpoint} does not record its dataset; pass --dataset and --data-root")

    model = build_model_from_config(model_config)
    check_model_fits(weights, model, args.checkpoint, model_config)
    model.load_state_dict(weights)
    model.to(device)
    channels_last = bool(config.get("channels_last"))
    if channels_last:
        model.to(memory_format=torch.channels_last)

    mean, std = NORMALISATIONS[model_config.get("norm", "imagenet")]
    transform = build_eval_transform(AugmentConfig(img_size=model_config["img_size"], mean=mean, std=std,
                                                   interpolation=model_config.get("interpolation", "bilinear")))
    # Cross-dataset evaluation (another dataset or root): all of its classes, then the shared ones.
    same_data = dataset == config.get("dataset") and str(data_root) == str(config.get("data_root"))
    framing, line = evaluation_framing(args.align, model_config.get("align"), data_root, same_data)
    print(line)
    if framing:
        from torchvision.transforms import Compose

        from utils.inference import FramingTransform

        transform = Compose([FramingTransform(framing), transform])
    data = load_split(args, config, dataset, data_root, transform, same_data)
    model_classes = list(model_config["classes"])
    data, shared_logits, cross = shared_class_subset(data, model_classes, f"{dataset} at {data_root}")
    batch_size = args.batch_size or config.get("eval_batch_size") or 2 * config.get("batch_size", 32)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=args.workers)
    tta = args.tta or config.get("tta", "none")
    print(f"weights: {'the weight average (--ema)' if which == 'ema' else 'the trained model'}; test-time "
          f"augmentation: {tta}" + ("" if args.tta else " (the run's)"))
    indices, targets, predictions, probs = engine.predict(model, loader, device, amp, channels_last, not args.no_progress,
                                                          eval_logits, tta)
    votes, metric_probs = None, probs
    if shared_logits is not None:  # argmax over the shared classes' logits (= over their softmax probabilities)
        predictions = probs[:, shared_logits].argmax(1)
        metric_probs = probs[:, shared_logits] / probs[:, shared_logits].sum(1, keepdim=True)  # for the ECE
    else:  # the annotators' votes (FERPlus) are over the model's own classes
        votes = vote_counts(data, len(data.classes))
    metrics = evaluation_metrics(targets.tolist(), predictions.tolist(), metric_probs.cpu().numpy(), len(data.classes),
                                 None if votes is None else votes[indices.cpu().numpy()])
    if cross is not None:
        metrics["cross_dataset"] = cross

    classes = data.classes
    print(f"{args.checkpoint}{f' ({args.network})' if args.network else ''} on {dataset} {args.split} ({len(data)} images)")
    print(f"overall accuracy {metrics['overall_acc'] * 100:.2f}  mean class accuracy {metrics['mean_acc'] * 100:.2f}  "
          f"macro-F1 {metrics['macro_f1'] * 100:.2f}  ECE {metrics['ece'] * 100:.2f}")
    if "vote_kl" in metrics:
        print(f"against the annotators' votes: KL(votes || model) {metrics['vote_kl']:.4f}  "
              f"NLL of the votes {metrics['vote_nll']:.4f}")
    if Path(args.checkpoint).name == "best.pth" and same_data and args.split == "test":
        for line in selection_note(state, Path(args.checkpoint)):
            print(line)
    if cross is not None:
        print(f"cross-dataset: metrics over the {len(classes)} shared classes ({', '.join(classes)}); "
              "prediction = argmax over the shared classes' logits")
        print("  dataset classes the model lacks (dropped): " + (", ".join(
            f"{c} ({n} images removed)" for c, n in cross["dropped_dataset_classes"].items()) or "none")
              + f"; {cross['images_removed']} of {cross['images_total']} images removed")
        print("  model classes the dataset lacks (logits excluded): "
              + (", ".join(cross["excluded_model_classes"]) or "none"))
    width = max(len(c) for c in classes)
    for name, acc in zip(classes, metrics["per_class_acc"]):
        print(f"  {name:<{width}}  {acc * 100:6.2f}")
    print("confusion matrix (rows true, columns predicted): " + " ".join(c[:4] for c in classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        print(f"  {name:<{width}}  " + " ".join(f"{n:5d}" for n in row))

    out_dir = Path(args.output) if args.output else Path(args.checkpoint).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(args.checkpoint).stem}_{args.split}" + (f"_{args.network}" if args.network else "")
    plot_confusion_matrix(metrics["confusion_matrix"], classes, out_dir / f"{stem}_confusion_matrix.png",
                          f"{model_config['backbone']}: overall {metrics['overall_acc'] * 100:.1f}, "
                          f"mean {metrics['mean_acc'] * 100:.1f}")
    with open(out_dir / f"{stem}_predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "prediction", *[f"p_{c}" for c in model_classes]])
        for index, target, prediction, p in zip(indices.tolist(), targets.tolist(), predictions.tolist(), probs.tolist()):
            writer.writerow([str(data.samples[index].path), classes[target], classes[prediction], *[f"{x:.5f}" for x in p]])
    (out_dir / f"{stem}_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out_dir / f'{stem}_confusion_matrix.png'}, {stem}_predictions.csv and {stem}_metrics.json")
    return metrics


def cli(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    try:
        return main(args)
    except (DatasetError, CheckpointError, ValueError) as exc:
        error_exit(worker_error_message(exc))


if __name__ == "__main__":
    cli()
