#!/bin/sh
# FER recipes: MEK and the methods it is compared with, each with its source's settings. Usage:
#   sh train_exp.sh [RECIPE] [extra train.py flags ...]
# RECIPE (RAF-DB unless named otherwise; where each setting comes from: the comments below):
#   swin      MEK, Swin-T at 112 (MEK's official code; the default)
#   swin-ce   the plain cross-entropy baseline of the same recipe
#   mek-r18   MEK, ResNet-18 at 224 on EAC's training settings (MEK's ResNet-18 code is not released)
#   ce-r18    cross-entropy on the same settings
#   eac-r18   EAC, ResNet-18 (MS-Celeb), EAC's official settings with the authors' ResNet-18 lr 2e-4
#   eac-r50   EAC, ResNet-50 (VGGFace2), EAC's official settings (lr 1e-4)
#   focal-r18, ldam-r18, balanced-softmax-r18, logit-adjust-r18, coupling-r18
#             the long-tail losses (coupling = focal on LDAM margins) on EAC's ResNet-18 settings
#   demo      MEK on generated synthetic faces, a few minutes on a CPU
#   rul       RUL (NeurIPS 2021), ResNet-18 at 224 on RAF-DB, the official recipe
#   dan       DAN (Distract your Attention), ResNet-18 at 224 on RAF-DB, the official recipe
#   dan-affectnet  DAN on AffectNet (8 classes; AFFECTNET_ROOT, default dataset/affectnet)
#   hybrid    ResNet-18 with CBAM blocks + RUL's uncertainty mixing + class-weighted cross-entropy
#   ce-dlib, mek-dlib  cross-entropy / MEK on dlib's face-recognition ResNet (pip face-recognition-models), 150 px
#   ce-dlib-ferplus, mek-dlib-ferplus  the same backbone on FERPlus (FERPLUS_ROOT), bench/ferplus.sh's settings
#   ferplus-fast  cross-entropy on FERPlus in the fast regime (docs/fast_regime.md): ResNet-18 for 64 px faces
#             from scratch, augmentation on the device, weight averaging and flip TTA; any method with --method NAME
#   face2exp  Face2Exp (CVPR 2022): teacher/student meta pseudo-labels on unlabelled faces (UNLABELED_ROOT), the
#             official command's settings; face2exp-demo: the whole loop on generated faces, minutes on a CPU
# Environment: DATA_ROOT (default dataset/raf-basic), FERPLUS_ROOT (default dataset/ferplus), DEMO_ROOT (demo recipe; default dataset/demo),
#   OUTPUT (default output/<recipe>), PYTHON (default python), FLAGS_ONLY=1 (print the recipe's train.py flags, run nothing),
#   NGPUS (processes per machine; default: all visible GPUs, 1 on CPU),
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT for several machines (torchrun rendezvous).
# Extra flags are passed to train.py last, so they override the recipe (e.g. --rac-weight 0).
# Batch rule, the same for every recipe: a recipe's --batch-size is its paper's TOTAL batch, kept on any
#   number of processes (NNODES x NGPUS): each process gets total / processes (which must divide it), so the
#   steps, epochs and learning rate are the paper's. A --batch-size among the extra flags is per process.
# Precision: --amp auto: on CUDA bf16 where the GPU has it natively, else fp16 with a gradient scaler; on CPU
#   bf16 only where measured faster than fp32 here (--amp overrides).
set -eu

RECIPE="${1:-swin}"
case "$RECIPE" in -*) RECIPE=swin ;; *) [ $# -gt 0 ] && shift ;; esac
PYTHON="${PYTHON:-python}"
DATA_ROOT="${DATA_ROOT:-dataset/raf-basic}"
OUTPUT="${OUTPUT:-output/$RECIPE}"

# MEK's Swin-T recipe (zyh-uaiaaaa/Mine-Extra-Knowledge): code/configs/exp.py (112 px, AdamW 5e-4 per 512
# images, weight decay 0.05, 2,000 warmup steps from 5e-7, cosine to 5e-6, batch 32, 60,000 steps: the RAF-DB
# run of code/results/training.log, "total_step 60000"), code/train_exp.py (lr scaled by batch/512, clip 5,
# AdamW over every parameter, eval every 1,000 steps, eps 0.3 / lambda 0.1), code/expression/__init__.py
# (timm transform: bicubic, flip 0.5, RandAugment rand-m9-mstd0.5-inc1 (timm skips the 0.4 colour jitter),
# mean/std 0.5, random erasing 0.25 in pixel mode), code/backbones/swin.py (patch 2, window 7, drop path 0.1).
SWIN="--backbone swin_t --img-size 112 --norm half --interpolation bicubic --scale-min 1.0 \
  --auto-augment rand-m9-mstd0.5-inc1 --color-jitter 0.4 --reprob 0.25 --remode pixel --re-max-area 0.3333 \
  --opt adamw --lr 5e-4 --lr-base-batch 512 --weight-decay 0.05 --weight-decay-scope all --sched cosine \
  --warmup-steps 2000 --warmup-lr 5e-7 --min-lr 5e-6 --clip-grad 5 --batch-size 32 --steps 60000 --eval-interval 1000"
# EAC's training (zyh-uaiaaaa/Erasing-Attention-Consistency, src/main.py and src/dataset.py): 224 px resize,
# ImageNet mean/std, no random flip of the training view, Gaussian noise (add_g, variance 30) on half the images,
# random erasing p 0.5 (0.02-0.25, zeros), Adam over every parameter with weight decay 1e-4, x0.9 per epoch,
# batch 32, 60 epochs; lr 1e-4 for the released ResNet-50, 2e-4 for ResNet-18 (the authors' advice, issues #3
# and #19). MEK's ResNet-18 code is not released; its recipes here use these settings.
EAC_TRAINING="--img-size 224 --norm imagenet --hflip 0 --noise-prob 0.5 --noise-var 30 --reprob 0.5 --re-max-area 0.25 \
  --remode const --opt adam --weight-decay 1e-4 --weight-decay-scope all --sched exponential --decay-rate 0.9 \
  --batch-size 32 --epochs 60"
R18="--backbone resnet18 --lr 2e-4 $EAC_TRAINING"
R50_VGGFACE2="--backbone resnet50_vggface2 --lr 1e-4 $EAC_TRAINING"
MEK="--method mek --rsl-eps 0.3 --rac-weight 0.1"
CE="--method ce"
# The long-tail losses with their papers' defaults: focal gamma 2 (Lin et al.); LDAM max margin 0.5, scale 30,
# normalised-linear head, deferred re-weighting (beta 0.9999) at 80% of the run (kaidic/LDAM-DRW cifar_train.py);
# logit adjustment tau 1 (Menon et al.); coupling: the focal loss on LDAM's margins and scale.
COUPLING="--method focal --focal-gamma 2 --max-margin 0.5 --logit-scale 30 --head norm-linear"
# RUL (official src/main.py): Adam 2e-4 (classifier 10x, the method's default), weight decay 1e-4 on every
# parameter, x0.9 per epoch, batch 64, 60 epochs, random erasing (0.02-0.25); the official loader augments
# half of the images with either a flip or Gaussian noise (variance 30): here each with p 0.25, independently.
RUL="--method rul --backbone resnet18 --img-size 224 --norm imagenet --hflip 0.25 --noise-prob 0.25 --noise-var 30 \
  --reprob 0.5 --re-max-area 0.25 \
  --remode const --opt adam --lr 2e-4 --weight-decay 1e-4 --weight-decay-scope all --sched exponential \
  --decay-rate 0.9 --batch-size 64 --epochs 60"
# The hybrid: RUL's recipe on ResNet-18 + CBAM, with class-weighted (N/(K n_k)) cross-entropy.
HYBRID="$RUL --backbone resnet18_cbam --rul-class-weights inverse"
# DAN on RAF-DB (official rafdb.py): SGD with plain momentum 0.9, lr 0.1, weight decay 1e-4 on every
# parameter, x0.1 every 10 epochs, 40 epochs, batch 256, flip, random erasing (0.02-0.25); the official
# RandomApply(rotation 20 + crop with padding 32, p 0.2) is not available here.
DAN="--method dan --backbone resnet18 --img-size 224 --norm imagenet --hflip 0.5 --reprob 0.5 --re-max-area 0.25 \
  --remode const --opt momentum --momentum 0.9 --lr 0.1 --weight-decay 1e-4 --weight-decay-scope all --sched step \
  --decay-epochs 10 --decay-rate 0.1 --batch-size 256 --epochs 40"
# DAN on AffectNet (official affectnet.py): Adam 1e-4, no weight decay, x0.6 per epoch, 40 epochs, batch 256,
# class-balanced sampling, random erasing (torchvision's default 0.02-0.33); its RandomAffine is not available here.
DAN_AFFECTNET="--method dan --backbone resnet18 --img-size 224 --norm imagenet --hflip 0.5 --reprob 0.5 \
  --re-max-area 0.33 --remode const --opt adam --lr 1e-4 --weight-decay 0 --sched exponential --decay-rate 0.6 \
  --batch-size 256 --epochs 40 --balanced-sampler"
AFFECTNET_ROOT="${AFFECTNET_ROOT:-dataset/affectnet}"
# dlib's face-recognition ResNet (models/dlib_resnet.py, docs/face_backbone.md): EAC's training settings, as for the
# face-pretrained ResNet-18 (mek-r18, ce-r18), so the backbones compare on equal terms, with the lr of the
# ResNet-18 (2e-4; dlib_resnet, up to level2, has 1.15M parameters, ResNet-18 11.2M); 150 px, the chip size dlib's
# network was trained on (input_rgb_image_sized<150>), and dlib's input normalisation (RGB, (p - mean) / 256).
# The weights come from the pip package face-recognition-models (--pretrained dlib; refused in one line
# without it); dlib_resnet's default --norm is dlib's own (models.dlib_resnet.DLIB_NORM).
DLIB="--backbone dlib_resnet --lr 2e-4 $EAC_TRAINING --img-size 150 --pretrained dlib --norm dlib"
# The same backbone on FERPlus: bench/ferplus.sh's ce-dlib arm, the one measured here (docs/results.md: 79.6% overall
# after 10 epochs): 112 px (the 48 px faces are upsampled either way; half the cost of 150), AdamW 5e-4 with
# weight decay 1e-4, cosine after 200 warmup steps, batch 64, 10 epochs, flip 0.5 and random erasing 0.25 (train.py's
# defaults), majority labels (--ferplus-labels), an evaluation every 195 steps. With FERPlus's FER2013Test present, the
# official protocol (choose best.pth on FER2013Valid, report on FER2013Test); without it, this machine's (10% of
# FER2013Train chooses, FER2013Valid reports). MEK adds its paper's eps 0.3 / lambda 0.1.
DLIB_FERPLUS="--backbone dlib_resnet --pretrained dlib --norm dlib --img-size 112 --opt adamw --lr 5e-4 \
  --weight-decay 1e-4 --sched cosine --warmup-steps 200 --batch-size 64 --epochs 10 --eval-interval 195 --cache-images"
# The fast FERPlus regime (docs/fast_regime.md, bench/ferplus_fast.sh; every choice measured there): ResNet-18 with
# a 3x3 stride-2 stem and no max-pool at half width (resnet18_s2_w32; 4x4 class maps at 64 px) from scratch, AdamW
# 2e-3 with weight decay 0.05, cosine after 300 warm-up steps, batch 64, 40 epochs; crops of 80-100% of the face,
# rotations up to 10 degrees, flips and erasing, applied to uint8 batches (--batch-augment); the weight average
# (--ema 0.999) chooses best.pth; flip test-time augmentation; an evaluation every 3 epochs (1,134 steps).
FAST_FERPLUS="--backbone resnet18_s2_w32 --img-size 64 --norm imagenet --opt adamw --lr 2e-3 --weight-decay 0.05 \
  --sched cosine --warmup-steps 300 --batch-size 64 --epochs 40 --scale-min 0.8 --rotate 10 --hflip 0.5 --reprob 0.25 \
  --batch-augment --ema 0.999 --tta flip --cache-images --workers 0 --eval-interval 1134 --save-interval 378"
FERPLUS_ROOT="${FERPLUS_ROOT:-dataset/ferplus}"
# Face2Exp (official src/main.py defaults + the README's AffectNet command: --randaug 2 16 --batch-size 8
# --teacher_lr 1e-3 --student_lr 1e-3 --total-steps 180000 --eval-step 100 --seed 5 --resize 224, on 2 GPUs:
# a total batch of 16):
# ResNet-50, SGD with plain momentum 0.9 and no weight decay for both networks, cosine to 0 without warmup,
# mu 7, lambda_u 1, T 1, no confidence mask (the official one is never applied), then 125 epochs of
# fine-tuning the student (SGD lr 1e-5, no momentum); class-balanced labelled batches (the paper's balanced
# base network). --batch-size 16 is the official total (2 GPUs x 8); NGPUS=2 gives 8 per process.
F2E="--method face2exp --backbone resnet50 --img-size 224 --norm imagenet --hflip 0.5 --scale-min 1.0 --reprob 0 \
  --opt momentum --momentum 0.9 --weight-decay 0 --lr 1e-3 --teacher-lr 1e-3 --sched cosine --warmup-steps 0 \
  --min-lr 0 --batch-size 16 --steps 180000 --eval-interval 100 --mu 7 --randaug 2 16 --lambda-u 1 --uda-steps 1 \
  --temperature 1 --finetune-epochs 125 --finetune-lr 1e-5 --finetune-momentum 0 --finetune-weight-decay 0 \
  --seed 5 --balanced-sampler"

need_raf_db() {
  if [ ! -f "$DATA_ROOT/EmoLabel/list_patition_label.txt" ]; then
    echo "error: RAF-DB not found: $DATA_ROOT/EmoLabel/list_patition_label.txt is missing." >&2
    echo "  Put RAF-DB basic at dataset/raf-basic (EmoLabel/list_patition_label.txt and Image/aligned/*.jpg;" >&2
    echo "  see dataset/README.md) or set DATA_ROOT=/path/to/raf-basic." >&2
    echo "  Without RAF-DB, try the pipeline on generated faces: sh train_exp.sh demo" >&2
    exit 2
  fi
}

need_ferplus() {
  if [ ! -f "$FERPLUS_ROOT/fer2013new.csv" ] && [ ! -f "$FERPLUS_ROOT/FER2013Train/label.csv" ] && [ ! -d "$FERPLUS_ROOT/train" ]; then
    echo "error: FERPlus not found under $FERPLUS_ROOT: no fer2013new.csv, FER2013Train/label.csv or train/." >&2
    echo "  Set FERPLUS_ROOT=/path/to/ferplus (layouts: data/ferplus.py)." >&2
    exit 2
  fi
  if [ -d "$FERPLUS_ROOT/FER2013Test" ] || [ -d "$FERPLUS_ROOT/test" ]; then
    FERPLUS_PROTOCOL="--dataset ferplus-private --data-root $FERPLUS_ROOT --val-split official"
  else
    echo "note: no FER2013Test under $FERPLUS_ROOT: this machine's protocol (10% of FER2013Train chooses best.pth," >&2
    echo "  FER2013Valid is the reported test split; docs/datasets.md)" >&2
    FERPLUS_PROTOCOL="--dataset ferplus --data-root $FERPLUS_ROOT --val-fraction 0.1"
  fi
}

need_affectnet() {
  if [ ! -f "$AFFECTNET_ROOT/training.csv" ] && [ ! -f "$AFFECTNET_ROOT/train.txt" ]; then
    echo "error: AffectNet not found: neither $AFFECTNET_ROOT/training.csv nor $AFFECTNET_ROOT/train.txt exists." >&2
    echo "  Set AFFECTNET_ROOT=/path/to/affectnet (layouts: data/affectnet.py)." >&2
    exit 2
  fi
}

PRETRAINED=""  # the recipe's face-pretrained backbone, used when present
case "$RECIPE" in
  swin)    need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $SWIN $MEK"; PRETRAINED=pretrained/start_0.pt ;;
  swin-ce) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $SWIN $CE"; PRETRAINED=pretrained/start_0.pt ;;
  mek-r18) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $R18 $MEK"; PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  ce-r18)  need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $R18 $CE"; PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  eac-r18) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $R18 --method eac --eac-lambda 5"
           PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  eac-r50) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $R50_VGGFACE2 --method eac --eac-lambda 5"
           PRETRAINED=pretrained/resnet50_ft_weight.pkl ;;
  focal-r18|ldam-r18|balanced-softmax-r18|logit-adjust-r18)
           need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $R18 --method ${RECIPE%-r18}"
           PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  coupling-r18) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $R18 $COUPLING"
           PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  demo)    FLAGS="--dataset demo --data-root ${DEMO_ROOT:-dataset/demo} --backbone resnet18 --img-size 48 \
             --opt adamw --lr 2e-3 --weight-decay 0.05 --sched cosine --warmup-steps 20 --batch-size 32 --epochs 5 \
             --reprob 0.25 --workers 0 --cache-images --overwrite $MEK" ;;
  rul)     need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $RUL"; PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  dan)     need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $DAN"; PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  dan-affectnet) need_affectnet; FLAGS="--dataset affectnet --data-root $AFFECTNET_ROOT $DAN_AFFECTNET"
           PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  hybrid)  need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $HYBRID"; PRETRAINED=pretrained/resnet18_msceleb.pth ;;
  ce-dlib) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $DLIB $CE" ;;
  mek-dlib) need_raf_db; FLAGS="--dataset raf-db --data-root $DATA_ROOT $DLIB $MEK" ;;
  ce-dlib-ferplus) need_ferplus; FLAGS="$FERPLUS_PROTOCOL $DLIB_FERPLUS $CE" ;;
  mek-dlib-ferplus) need_ferplus; FLAGS="$FERPLUS_PROTOCOL $DLIB_FERPLUS $MEK" ;;
  ferplus-fast) need_ferplus; FLAGS="$FERPLUS_PROTOCOL $FAST_FERPLUS $CE" ;;
  face2exp) need_raf_db
           if [ ! -e "${UNLABELED_ROOT:-}" ]; then
             echo "error: face2exp needs UNLABELED_ROOT=/path/to/faces (a folder of face images or a list file)" >&2; exit 2
           fi
           FLAGS="--dataset raf-db --data-root $DATA_ROOT $F2E --unlabeled-root $UNLABELED_ROOT" ;;
  face2exp-demo) DEMO="${DEMO_ROOT:-dataset/demo}"
           # The demo set plus an unlabelled set: its train images without labels and 1,400 more faces.
           # 4 fine-tuning epochs at lr 1e-2: after 129 MPL steps the student still predicts one class; the labels move it.
           "$PYTHON" -m data.demo "$DEMO" --unlabeled 1400 >/dev/null
           FLAGS="--dataset demo --data-root $DEMO --unlabeled-root $DEMO/unlabeled.txt --method face2exp \
             --backbone resnet18 --img-size 48 --opt adamw --lr 2e-3 --weight-decay 0.05 --sched cosine \
             --warmup-steps 20 --batch-size 32 --epochs 3 --mu 1 --randaug 2 16 --finetune-epochs 4 \
             --finetune-lr 1e-2 --finetune-momentum 0.9 --reprob 0 --workers 0 --cache-images --overwrite" ;;
  *) echo "error: unknown recipe '$RECIPE' (swin, swin-ce, mek-r18, ce-r18, eac-r18, eac-r50, focal-r18, ldam-r18, balanced-softmax-r18, logit-adjust-r18, coupling-r18, demo, rul, dan, dan-affectnet, hybrid, ce-dlib, mek-dlib, ce-dlib-ferplus, mek-dlib-ferplus, ferplus-fast, face2exp, face2exp-demo)" >&2; exit 2 ;;
esac
if [ -n "$PRETRAINED" ]; then
  if [ -f "$PRETRAINED" ]; then
    FLAGS="$FLAGS --pretrained $PRETRAINED"
    # MEK's Swin model puts a freshly initialised LayerNorm after the loaded encoder (code/expression/models.py).
    case "$RECIPE" in swin|swin-ce) FLAGS="$FLAGS --reset-final-norm" ;; esac
  else
    # Checked per recipe: the other recipe's weights being present does not help this one.
    echo "note: no face-pretrained backbone $PRETRAINED (see pretrained/README.md); training from scratch" >&2
  fi
fi

# Probed after the recipe and dataset checks, so those errors come without a torch import.
have_cuda() {
  # CUDA_VISIBLE_DEVICES="" (or -1) hides every GPU: no need to import torch to know.
  case "${CUDA_VISIBLE_DEVICES-unset}" in ""|-1) return 1 ;; esac
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
}
# train.py's --amp auto (its choice and reason are in the log): on CUDA bf16 where native, else fp16 with
# a scaler; on a CPU bf16 only where a timed probe finds it faster than fp32 (cached per machine).
FAST="--amp auto --channels-last"
if have_cuda; then
  NGPUS="${NGPUS:-$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')}"
else
  NGPUS="${NGPUS:-1}"
fi

# The batch rule (above): the recipe's last --batch-size is the total, split over the processes.
PROCESSES=$(( ${NNODES:-1} * NGPUS ))
TOTAL_BATCH=$(printf '%s\n' "$FLAGS" | sed -n 's/.*--batch-size \([0-9][0-9]*\).*/\1/p')
if [ -n "$TOTAL_BATCH" ] && [ "$PROCESSES" -gt 1 ]; then
  if [ $(( TOTAL_BATCH % PROCESSES )) -ne 0 ]; then
    echo "error: recipe $RECIPE's total batch $TOTAL_BATCH does not divide over $PROCESSES processes" \
      "(NNODES=${NNODES:-1} x NGPUS=$NGPUS); set NGPUS to a divisor of $TOTAL_BATCH" >&2
    exit 2
  fi
  FLAGS="$FLAGS --batch-size $(( TOTAL_BATCH / PROCESSES ))"
fi
if [ -n "$TOTAL_BATCH" ] && [ "${FLAGS_ONLY:-0}" != 1 ]; then
  echo "batch rule: the paper's total batch $TOTAL_BATCH is kept: $(( TOTAL_BATCH / PROCESSES )) per process x" \
    "$PROCESSES process(es); steps and learning rate as in the paper"
fi

if [ "${FLAGS_ONLY:-0}" = 1 ]; then  # the recipe's flags, e.g. for bench/ferplus_fast.sh
  echo "$FLAGS $FAST"
  exit 0
fi

# tcmalloc (Debian/Ubuntu package libtcmalloc-minimal4): +4% on the Xeon of bench/RESULTS.md, more on others.
if [ -z "${LD_PRELOAD:-}" ]; then
  for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
    if [ -f "$lib" ]; then export LD_PRELOAD="$lib"; break; fi
  done
fi

if [ "${NNODES:-1}" -gt 1 ] || [ "$NGPUS" -gt 1 ]; then
  LAUNCH="$PYTHON -m torch.distributed.run --nnodes ${NNODES:-1} --nproc_per_node $NGPUS"
  if [ "${NNODES:-1}" -gt 1 ]; then
    LAUNCH="$LAUNCH --node_rank ${NODE_RANK:?set NODE_RANK} --master_addr ${MASTER_ADDR:?set MASTER_ADDR} --master_port ${MASTER_PORT:-29500}"
  else
    LAUNCH="$LAUNCH --standalone"
  fi
else
  LAUNCH="$PYTHON"
fi

echo "+ $LAUNCH train.py $FLAGS $FAST --output $OUTPUT $*"
# shellcheck disable=SC2086
exec $LAUNCH train.py $FLAGS $FAST --output "$OUTPUT" "$@"
