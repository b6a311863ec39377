"""Why do MEK's terms hurt ResNet-18 from scratch on FER2013? Measurements on real batches.

    python bench/fer2013_probe.py [--data-root ../shared/data/fer2013] [--steps 50] [--every 10]
        [--init-checkpoint output/fer2013/scratch_ce/last.pth] [--out output/fer2013/probe.json]

1. Analytic: the re-balanced smooth-label target each class receives from the samples of
   the other classes (mass on disgust), for class-weight powers 1, 0.5, 0.
2. From scratch, the same recipe as bench/fer2013.sh (ResNet-18 at 112, AdamW 1e-3, batch 64,
   fp32, one-pass flip), one arm trained with cross-entropy and one with MEK (eps 0.3,
   lambda 0.1) for --steps steps. Every --every steps, on the training batch:
   - each term's value and the norm of its gradient at the feature map F (B, C, H, W):
     the cross-entropy part (1 - eps) CE, the smoothing part eps * H(t_others, p) of RSL,
     and lambda * RAC (RSL = (1 - eps) CE + eps * smoothing, exactly);
   - RAC's value (also measured, not trained, in the CE arm) and the share of it from disgust;
   - the histogram of predicted classes on the batch;
   - the features' flip-asymmetry ||F - flip(F')|| / ||F|| (F' = features of the mirror),
     the features' norm, and the attention maps' spatial contrast (std over h, w / |mean|).
3. Warm start (if --init-checkpoint exists): the same gradient measurements at step 0 of
   fine-tuning from a cross-entropy checkpoint, averaged over 3 batches.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data import build_dataset  # noqa: E402
from data.transforms import AugmentConfig, build_train_transform  # noqa: E402
from losses import class_weights_from_counts, rebalanced_smooth_targets  # noqa: E402
from losses.rebalanced_attention_consistency import rebalanced_attention_consistency  # noqa: E402
from models import build_model  # noqa: E402
from models.backbones import feature_map  # noqa: E402
from utils.checkpoint import load_checkpoint  # noqa: E402

EPS, LAM = 0.3, 0.1


def smooth_mass(counts, power):
    w = class_weights_from_counts(counts, power)
    K = len(counts)
    mass = torch.zeros(K)
    n = torch.tensor(counts, dtype=torch.float)
    for y in range(K):
        t = rebalanced_smooth_targets(torch.tensor([y]), w, EPS)[0]
        mass += n[y] * t
    # per class k: the average target a sample of another class puts on k
    others = [(mass[k] - n[k] * (1 - EPS)) / (n.sum() - n[k]) for k in range(K)]
    return w.tolist(), [float(o) for o in others]


def measure(model, images, labels, weights, eps=EPS, lam=LAM, grads=True, disgust=2):
    """One forward of images + mirrors; term values and gradient norms at the feature map."""
    mirrored = torch.flip(images, dims=[3])
    feats_all = feature_map(model.backbone, torch.cat([images, mirrored]))
    feats, feats_m = feats_all.chunk(2)
    # The CAM head pools F itself; its maps use the detached head weight, as in training.
    out_all = model.head(feats_all, with_maps=True)
    logits = out_all.logits[: images.shape[0]]
    maps, maps_m = out_all.attention_maps.chunk(2)
    logp = F.log_softmax(logits.float(), 1)
    ce = F.nll_loss(logp, labels)
    t = rebalanced_smooth_targets(labels, weights, eps)
    onehot = F.one_hot(labels, t.shape[1]).float()
    t_others = (t - (1 - eps) * onehot) / eps
    smooth = -(t_others * logp).sum(1).mean()
    rac = rebalanced_attention_consistency(maps, maps_m, weights)
    aligned = torch.flip(maps_m, dims=[3])
    per_class = ((maps - aligned) ** 2).mean(dim=(2, 3)).mean(0).detach() * weights
    out = {"ce": float(ce.detach()), "smooth": float(smooth.detach()), "rac": float(rac.detach()),
           "rac_disgust_share": float(per_class[disgust] / per_class.sum().clamp_min(1e-12))}
    if not grads:
        return out, ce, smooth, rac
    for name, term in (("g_ce", (1 - eps) * ce), ("g_smooth", eps * smooth), ("g_rac", lam * rac)):
        g = torch.autograd.grad(term, feats_all, retain_graph=True)[0]
        out[name] = float(g.norm())
    with torch.no_grad():
        fm = torch.flip(feats_m, dims=[3])
        out["feat_flip_asym"] = float((feats - fm).norm() / feats.norm().clamp_min(1e-12))
        out["feat_norm"] = float(feats.flatten(1).norm(dim=1).mean())
        sp_std = maps.flatten(2).std(2)
        sp_mean = maps.flatten(2).mean(2).abs()
        out["map_contrast"] = float((sp_std / (sp_mean + 1e-6)).median())
        out["map_std"] = float(sp_std.mean())
        out["pred_hist"] = torch.bincount(logits.argmax(1), minlength=t.shape[1]).tolist()
    return out, ce, smooth, rac


def train_arm(name, dataset, weights, steps, every, seed, mek):
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes=7, img_size=112).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, drop_last=True, generator=g, num_workers=0)
    rows, it = [], iter(loader)
    model.train()
    for step in range(steps + 1):
        images, labels, _ = next(it)
        images = images.contiguous(memory_format=torch.channels_last)
        record = step % every == 0 or step == steps
        if not record and not mek:
            ce = F.cross_entropy(model(images).logits, labels)
            opt.zero_grad(set_to_none=True)
            ce.backward()
            opt.step()
            sched.step()
            continue
        stats, ce, smooth, rac = measure(model, images, labels, weights, grads=record, disgust=dataset.classes.index("disgust"))
        if record:
            stats["step"] = step
            rows.append(stats)
            print(name, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()}), flush=True)
        if step == steps:
            break
        loss = ((1 - EPS) * ce + EPS * smooth + LAM * rac) if mek else ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(REPO / ".." / "shared" / "data" / "fer2013"))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-checkpoint", default=str(REPO / "output" / "fer2013" / "scratch_ce" / "last.pth"))
    p.add_argument("--out", default=str(REPO / "output" / "fer2013" / "probe.json"))
    p.add_argument("--skip-scratch", action="store_true")
    args = p.parse_args()
    t0 = time.time()
    aug = AugmentConfig(img_size=112)
    ds = build_dataset("folder", args.data_root, "train", build_train_transform(aug))
    counts = ds.class_counts()
    result = {"classes": ds.classes, "counts": counts, "smooth_mass": {}}
    for power in (1.0, 0.5, 0.0):
        w, others = smooth_mass(counts, power)
        result["smooth_mass"][power] = {"weights": w, "avg_target_from_other_classes": others}
        print(f"power {power}: w = {[round(x, 3) for x in w]}; avg RSL target on each class from the other "
              f"classes' samples = {[round(x, 3) for x in others]}", flush=True)
    weights = class_weights_from_counts(counts)
    if not args.skip_scratch:
        for name, mek in (("scratch_ce", False), ("scratch_mek", True)):
            result[name] = train_arm(name, ds, weights, args.steps, args.every, args.seed, mek)
    ck = Path(args.init_checkpoint)
    if ck.is_file():
        model = build_model("resnet18", num_classes=7, img_size=112).to(memory_format=torch.channels_last)
        model.load_state_dict(load_checkpoint(str(ck))["model"])
        model.train()
        loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(1))
        rows, it = [], iter(loader)
        for power in (1.0, 0.5):
            w = class_weights_from_counts(counts, power)
            for _ in range(3):
                images, labels, _ = next(it)
                stats, *_ = measure(model, images.contiguous(memory_format=torch.channels_last), labels, w,
                                     disgust=ds.classes.index("disgust"))
                stats["power"] = power
                rows.append(stats)
                print("warm", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()}), flush=True)
        result["warm"] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
