#!/usr/bin/env bash
# The paper's experiments, one command each, on any prepared dataset (default: the toy data).
#   bash experiments.sh sweep       # Fig. 5 / Tab. 6 / Fig. 7: seg mIoU vs R, SEEDS seeds, mean +- SE,
#                                   #   per-class IoU gain vs class share + Pearson r (report.py)
#   bash experiments.sh ablation    # Tab. 3: bits-eps (paper) vs onehot-eps vs bits-x0, at R = 1
#   bash experiments.sh baselines   # Tab. 5: Cutout / CutMix / Copy-Paste vs synthetic pairs, R = 1
#   bash experiments.sh image_only  # Tab. 1a: FID / sFID / IS of an image-only DDPM vs the joint one
# Knobs (environment): DS dataset, GEN generator recipe (+ overrides), SAMPLE sampler overrides,
# SEG segmenter recipe (+ overrides), SEEDS, RS (the R values), OUT (default out-exp-$DS).
# On real data, e.g.: DS=loveda GEN="configs/gen_paper.py" SEG="configs/seg_paper.py" \
#   SAMPLE="--sampler=ddpm" bash experiments.sh sweep          (GPU-days; see README)
# Each step skips work already done (a generator with a ckpt.pt, samples that exist, seg runs
# with a results.json), so a killed sweep resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python}
DS=${DS:-toy}; DATA=${DATA:-data}; OUT=${OUT:-out-exp-$DS}
GEN=${GEN:-configs/gen_toy.py --max_minutes=30}
SAMPLE=${SAMPLE:---sampler=ddim --steps=50}
SEG=${SEG:-configs/seg_toy.py --image_size=64 --max_iters=300 --eval_interval=300}
SEEDS=${SEEDS:-1 2 3}; RS=${RS:-0 1 3 5}
COMMON="--data_dir=$DATA --dataset=$DS"

gen() {  # gen NAME [overrides...]: train a generator once into $OUT/gen-NAME
  local name=$1; shift
  [ -f "$OUT/gen-$name/ckpt.pt" ] || $PY train_gen.py $GEN $COMMON --out_dir="$OUT/gen-$name" "$@"
}
sample() {  # sample NAME RATIO: R x |train| pairs from gen-NAME (resumable: only new indices)
  $PY sample.py $SAMPLE $COMMON --ckpt="$OUT/gen-$1/ckpt.pt" --out_dir="$OUT/sample-$1" --ratio=$2
}
subset() {  # subset SRC DST N: a pair folder holding the first N pairs of SRC, as symlinks
  rm -rf "$2"; mkdir -p "$2/images" "$2/masks"; cp "$1/meta.json" "$2/"
  ls "$1/masks" | sort | head -n "$3" | while read -r f; do
    ln -s "$(realpath "$1/masks/$f")" "$2/masks/$f"; ln -s "$(realpath "$1/images/$f")" "$2/images/$f"
  done
}
seg() {  # seg DIR [overrides...]: one seg.py run per seed into DIR/seed<k>, unless it finished
  local dir=$1; shift
  for s in $SEEDS; do
    [ -f "$dir/seed$s/results.json" ] || $PY seg.py $SEG $COMMON --seed=$s --out_dir="$dir/seed$s" "$@"
  done
}
n_train() { $PY -c "import json; print(json.load(open('$DATA/$DS/meta.json'))['counts']['train'])"; }

case "${1:-}" in
  sweep)
    gen bits
    rmax=$(echo $RS | tr ' ' '\n' | sort -n | tail -n 1)
    [ "$rmax" = 0 ] || sample bits "$rmax"
    for R in $RS; do
      if [ "$R" = 0 ]; then seg "$OUT/sweep/R0"; continue; fi
      subset "$OUT/sample-bits" "$OUT/sample-bits-R$R" $(( R * $(n_train) ))
      seg "$OUT/sweep/R$R" --synthetic_dir="$OUT/sample-bits-R$R"
    done
    $PY report.py $COMMON --sweep_dir="$OUT/sweep" --baseline=R0 ;;
  ablation)
    # the paper's baseline is bits + eps; each variant changes one of the two, whatever GEN's default
    for v in "bits-eps --label_encoding=bits --objective=eps" \
             "onehot-eps --label_encoding=onehot --objective=eps" \
             "bits-x0 --label_encoding=bits --objective=x0"; do
      set -- $v; gen "$@"; sample "$1" 1
      seg "$OUT/ablation/$1" --synthetic_dir="$OUT/sample-$1"
    done
    seg "$OUT/ablation/real"
    $PY report.py $COMMON --sweep_dir="$OUT/ablation" --baseline=real ;;
  baselines)
    gen bits; sample bits 1
    seg "$OUT/baselines/none"
    seg "$OUT/baselines/cutout" --cutout=0.5
    seg "$OUT/baselines/cutmix" --cutmix=0.5
    seg "$OUT/baselines/copy_paste" --copy_paste=0.5
    seg "$OUT/baselines/synthetic" --synthetic_dir="$OUT/sample-bits"
    $PY report.py $COMMON --sweep_dir="$OUT/baselines" --baseline=none ;;
  image_only)
    gen bits; sample bits 1; gen none --label_encoding=none; sample none 1
    SEEDS=1 seg "$OUT/image_only/real"
    for v in bits none; do
      $PY metrics.py $COMMON --real="$DATA/$DS" --fake="$OUT/sample-$v" \
        --seg_ckpt="$OUT/image_only/real/seed1/ckpt.pt" --out_dir="$OUT/image_only/metrics-$v"
    done ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
