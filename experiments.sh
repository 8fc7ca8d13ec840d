#!/usr/bin/env bash
# The paper's experiments, one command each, on any prepared dataset (default: the toy data).
#   bash experiments.sh sweep       # Fig. 5 / Tab. 6 / Fig. 7: seg mIoU vs R at G's resolution,
#                                   #   SEEDS seeds, mean +- SE, per-class gain vs class share (report.py)
#   bash experiments.sh ablation    # Tab. 3: bits-eps (paper) vs onehot-eps vs bits-x0, R = 1 and 3
#   bash experiments.sh baselines   # Tab. 5: Cutout / CutMix / Copy-Paste vs synthetic pairs, R = 1
#   bash experiments.sh superres    # Tab. 2: G -> sample -> G_SR upsample -> seg at 2x, vs real at 2x
#   bash experiments.sh image_only  # Tab. 1a: FID / sFID / IS of an image-only DDPM vs the joint one
#   bash experiments.sh lowdata     # the claim at CPU scale: a small D, generated vs oracle pairs
#                                   #   at R = 1, 3 against R = 0; on any prepared dataset (DS=...:
#                                   #   the oracle = other real train patches), toy: fresh scenes
#   bash experiments.sh generators  # after lowdata: generator options (objective, min-SNR,
#                                   #   self-conditioning, ...: GENS) at R = 3 vs lowdata's arms
#   bash experiments.sh compute     # after lowdata: the captured fraction and the consistency vs
#                                   #   G's iterations (ITERS_CURVE; CURVE: more G overrides), R = 3
#   bash experiments.sh steps       # after lowdata: DDIM / DPM-Solver++ steps vs pair quality and
#                                   #   vs the downstream gain at R = 3 (DDPM-1000 beside them)
#   bash experiments.sh clean       # after lowdata: choosing and cleaning the generated pairs
#                                   #   (clean.py), each option at R = 1 and 3 vs plain pairs
#   bash experiments.sh bf16        # the toy generator in fp32 vs bf16 autocast, same wall time
#                                   #   and same iterations: class TVD, consistency, FID
#   bash experiments.sh segbf16     # after lowdata: its R0 and gen-R3 segmenters again in bf16
#                                   #   autocast + channels_last, same iterations, vs fp32
#   bash experiments.sh segmenters  # after lowdata: Tab. 2 at CPU scale: lowdata's arms for each
#                                   #   segmenter (SEGS), the same pairs for all, beside the FPN's
#   bash experiments.sh conditional # after lowdata: mask2img pairs (real masks / G's layouts) and
#                                   #   SegDiff (masks given images) beside joint pairs, R = 3
#   bash experiments.sh direct2x    # after lowdata at 1x and 2x (OUT_2X): Tab. 4, G + G_SR vs G at 2x
# The segmenter trains and is evaluated at ONE resolution: the generator's (read from its
# checkpoint), or G_SR's for `superres`. Every seg run sees the same number of real samples
# (seg.py budget='real': R > 0 runs are lengthened, not robbed of real data).
# Knobs (environment): DS dataset, GEN generator recipe (+ overrides), SR the G_SR recipe, SAMPLE
# sampler overrides (also used to upsample), SEG segmenter recipe (+ overrides), BACKBONE a
# --backbone_ckpt for every seg run (a local torchvision file, or 'imagenet'), SEEDS, RS (the R
# values of the sweep; RS_LOW for lowdata, default 1 3), N_D, GEN_LOW, SEG_LOW, SEG_ITERS_LOW
# (lowdata's |D|, recipes and R0's iterations), ORACLE (lowdata: 'fresh' toy scenes, the toy
# default, or 'split': groups of DS's own train patches, any other DS), N_SELECT, SPLIT (the
# split's selection-set size and more prepare.py overrides, e.g. --by_source=True), POOL
# (lowdata's generated arms keep R x |D| of POOL x R x |D| pairs, chosen for rare classes; 1 = as
# they come), SEGS (the segmenters' architectures, default pspnet farseg pfsegnet segformer_b0),
# MEAN_OF (conditional: SegDiff's samples per mask), OUT_2X and SR_LOW (direct2x: the lowdata run
# at 2x, the G_SR recipe), JOBS (seg runs at once, each on 1 thread; 2 suits 2 CPU cores), OUT
# (default out-exp-$DS). On your own data (README, "Your data"): DS=mine bash experiments.sh lowdata.
# On real data at the paper's scale, e.g.:
#   DS=isaid GEN=configs/gen_paper.py SR=configs/isaid_sr.py SEG=configs/seg_paper.py \
#   SAMPLE=--sampler=ddpm BACKBONE=imagenet bash experiments.sh sweep     (GPU-days; see README)
# Each step skips work already done (a generator with a ckpt.pt, samples that exist, seg runs
# whose results.json is from their last iteration) and a killed seg run continues exactly from its
# ckpt.pt, so a killed experiment resumes where it stopped. This script only orchestrates: the
# tables and figures are report.py's (seg runs over seeds) and tables.py's (--table=steps|clean|
# bf16|segmenters|compute), the oracle's pairs come from `pairs.py export_split`.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python}
DS=${DS:-toy}; DATA=${DATA:-data}; OUT=${OUT:-out-exp-$DS}
GEN=${GEN:-configs/gen_toy.py --max_minutes=30}
SR=${SR:-configs/sr_toy.py}
SAMPLE=${SAMPLE:---sampler=dpm++ --steps=20}  # = DDPM-1000 downstream (docs/RESULTS.md, steps)
SEG=${SEG:-configs/seg_toy.py --max_iters=300 --eval_interval=300}
BACKBONE=${BACKBONE:-}
SEEDS=${SEEDS:-1 2 3}; RS=${RS:-0 1 3 5}
COMMON="--data_dir=$DATA --dataset=$DS"

gen() {  # gen NAME [overrides...]: train a generator once into $OUT/gen-NAME; an
  local name=$1; shift  # iteration-bounded one killed before max_iters continues from its ckpt.pt
  local ck="$OUT/gen-$name/ckpt.pt"
  if [ ! -f "$ck" ]; then
    $PY train_gen.py $GEN $COMMON --out_dir="$OUT/gen-$name" "$@"
  elif $PY -c "import sys, torch; c = torch.load(sys.argv[1], weights_only=True)
sys.exit(not (c['config']['max_minutes'] == 0 and c['iter_num'] < c['config']['max_iters']))" "$ck"
  then
    $PY train_gen.py $GEN $COMMON --out_dir="$OUT/gen-$name" "$@" --init_from=resume
  fi
}
sample() {  # sample NAME RATIO: R x |train| pairs from gen-NAME (resumable: only new indices)
  $PY sample.py $SAMPLE $COMMON --ckpt="$OUT/gen-$1/ckpt.pt" --out_dir="$OUT/sample-$1" --ratio=$2
}
subset() {  # subset SRC DST N: a pair folder holding the first N pairs of SRC, as symlinks
  rm -rf "$2"; mkdir -p "$2/images" "$2/masks"; cp "$1/meta.json" "$2/"
  [ -d "$1/margins" ] && ln -s "$(realpath "$1/margins")" "$2/margins"  # read by stem
  local files=($(ls "$1/masks" | sort))  # (not `| head`: a SIGPIPE'd sort fails the pipefail)
  for f in "${files[@]:0:$3}"; do
    ln -s "$(realpath "$1/masks/$f")" "$2/masks/$f"; ln -s "$(realpath "$1/images/$f")" "$2/images/$f"
  done
}
ckpt() {  # ckpt CKPT KEY...: one value of a checkpoint, e.g. `ckpt F model_args image_size`
  $PY -c "import functools, sys, torch
print(functools.reduce(dict.get, sys.argv[2:], torch.load(sys.argv[1], weights_only=True)))" "$@"
}
res() { ckpt "$1" model_args image_size; }  # the side of the pairs a train_gen.py checkpoint makes
JOBS=${JOBS:-1}; RUNS=()
finished() {  # finished RUN: a seg.py run whose results.json is from its last iteration
  [ -f "$1/results.json" ] && $PY -c "import json, sys; r = json.load(open(sys.argv[1]))
sys.exit(r['iter_num'] != r.get('iters', r['iter_num']))" "$1/results.json"
}
seg() {  # seg DIR [overrides...]: one seg.py run per seed into DIR/seed<k> at $RES, unless finished;
  local dir=$1; shift  # a killed run continues exactly from its ckpt.pt
  for s in $SEEDS; do
    finished "$dir/seed$s" && continue
    local cmd=($PY seg.py $SEG $COMMON --image_size=$RES --crop_size=$RES
               ${BACKBONE:+--backbone_ckpt=$BACKBONE} --seed=$s --out_dir="$dir/seed$s" "$@")
    [ -f "$dir/seed$s/ckpt.pt" ] && cmd+=(--init_from=resume)
    if [ "$JOBS" = 1 ]; then "${cmd[@]}"; continue; fi
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done  # JOBS runs at once ...
    mkdir -p "$dir"; OMP_NUM_THREADS=1 "${cmd[@]}" > "$dir/seed$s.out" 2>&1 & RUNS+=("$dir/seed$s")
  done
}
drain() {  # ... and one that did not reach its last iteration stops all (not `wait PID`: bash
  wait     # may have reaped a finished job already and then calls it "not a child")
  for r in "${RUNS[@]}"; do finished "$r" || { echo "$r: seg.py failed, see $r.out"; exit 1; }; done
  RUNS=()
}
n_train() { $PY -c "import json; print(json.load(open('$DATA/$DS/meta.json'))['counts']['train'])"; }

lowdata_setup() {  # the lowdata protocol's data and recipes (also used by `steps`)
  N=${N_D:-64}
  ORACLE=${ORACLE:-$([ "$DS" = toy ] && echo fresh || echo split)}
  if [ "$ORACLE" = fresh ]; then  # toy: D, the oracle and the selection set are new toy scenes
    LOW=${DS}_low$N; FRESH=${DS}_fresh$N; OUT=${OUT%/}-low$N
    [ -f "$DATA/$LOW/meta.json" ] || $PY prepare.py configs/toy.py --data_dir=$DATA \
      --dataset=$LOW --n_train=$N --n_val=128
    [ -f "$DATA/$FRESH/meta.json" ] || $PY prepare.py configs/toy.py --data_dir=$DATA \
      --dataset=$FRESH --seed=7 --n_train=$(( 3 * N )) --n_val=32  # R <= 3
  else  # any prepared dataset: D, the oracle (3 x N_D) and the selection set (N_SELECT) are
    # disjoint groups of its train patches (SPLIT: more prepare.py overrides, e.g.
    # --by_source=True); the reported split is its val split. split.json records the draw.
    LOW=${DS}_split$N; FRESH=${LOW}_oracle; OUT=${OUT%/}-split$N
    [ -f "$DATA/$LOW/split.json" ] && [ -f "$DATA/$FRESH/split.json" ] || $PY prepare.py \
      --reader=lowdata --raw_dir="$DATA/$DS" --data_dir=$DATA --dataset=$LOW --n_d=$N \
      --n_select=${N_SELECT:-32} ${SPLIT:-}
  fi
  DS=$LOW; COMMON="--data_dir=$DATA --dataset=$DS"
  GEN=${GEN_LOW:-configs/gen_toy.py --max_minutes=0 --max_iters=2500}
  ITERS=${SEG_ITERS_LOW:-1000}  # R0's iterations; R > 0 arms at share 0.5 run twice as many
  SEG="${SEG_LOW:-configs/seg_toy.py --batch_size=16 --eval_interval=100 --scale_range=(1.0,1.0)} --max_iters=$ITERS"
  POOL=${POOL:-3}  # the generated arms keep R x |D| of POOL x R x |D| pairs (1: as they come)
}
compare_generators() {  # compare_generators FOLDER OPTIONS: generators on lowdata's protocol
  # (after lowdata_setup and RES), one per OPTIONS line: a name and train_gen.py overrides on top
  # of GEN_LOW. Each G trains on D into FOLDER/gen-<name>, samples POOL x 3 x |D| pairs
  # (FOLDER/pool-<name>), keeps 3 x |D| of them for D's rare classes as lowdata does (clean.py
  # --keep, into FOLDER/<name>-R3) and trains the segmenter at R = 3 over SEEDS
  # (FOLDER/seg/<name>-R3). Pairs already chosen (a clean.json there, also through a link to
  # lowdata's) are not sampled again. lowdata's R0, R0-long and oracle-R3 are linked beside
  # them; report.py over R0-long (report-vs-R0-long.*), then over R0; metrics.py on each pool
  # with lowdata's R0 segmenter (consistency, colour, FID, memorisation).
  local folder=$1 options=$2 name opts
  local OUT_LOW=$OUT
  local OUT=$folder  # gen() trains into $OUT/gen-<name>
  mkdir -p "$folder/seg"
  while read -r name opts; do
    gen "$name" $opts
    if [ ! -f "$folder/$name-R3/clean.json" ]; then
      $PY sample.py $SAMPLE $COMMON --ckpt="$folder/gen-$name/ckpt.pt" \
        --out_dir="$folder/pool-$name" --num_samples=$(( POOL * 3 * N ))
      $PY clean.py $COMMON --in_dir="$folder/pool-$name" --out_dir="$folder/$name-R3" \
        --keep=$(( 3 * N )) --temperature=2 > /dev/null
    fi
    seg "$folder/seg/$name-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$folder/$name-R3"
  done <<< "$options"
  drain
  for a in R0 R0-long oracle-R3; do
    ln -sfn "$(realpath "$OUT_LOW/lowdata/$a")" "$folder/seg/$a"
  done
  $PY report.py $COMMON --sweep_dir="$folder/seg" --baseline=R0-long > /dev/null
  for f in md json; do mv "$folder/seg/report.$f" "$folder/seg/report-vs-R0-long.$f"; done
  $PY report.py $COMMON --sweep_dir="$folder/seg" --baseline=R0
  while read -r name opts; do
    [ -f "$folder/metrics-$name/metrics.json" ] || $PY metrics.py $COMMON --real="$DATA/$LOW" \
      --fake="$folder/pool-$name" --seg_ckpt="$OUT_LOW/lowdata/R0/seed${SEEDS%% *}/best.pt" \
      --out_dir="$folder/metrics-$name" > /dev/null
  done <<< "$options"
}

case "${1:-}" in
  sweep)
    gen bits; RES=$(res "$OUT/gen-bits/ckpt.pt")
    rmax=$(echo $RS | tr ' ' '\n' | sort -n | tail -n 1)
    [ "$rmax" = 0 ] || sample bits "$rmax"
    for R in $RS; do
      if [ "$R" = 0 ]; then seg "$OUT/sweep/R0"; continue; fi
      subset "$OUT/sample-bits" "$OUT/sample-bits-R$R" $(( R * $(n_train) ))
      seg "$OUT/sweep/R$R" --synthetic_dir="$OUT/sample-bits-R$R"
    done
    drain; $PY report.py $COMMON --sweep_dir="$OUT/sweep" --baseline=R0 ;;
  ablation)
    # the paper's baseline is bits + eps; each variant changes one of the two, whatever GEN's
    # default; Tab. 3's claim rests on R = 3, so both R = 1 and R = 3
    for v in "bits-eps --label_encoding=bits --objective=eps" \
             "onehot-eps --label_encoding=onehot --objective=eps" \
             "bits-x0 --label_encoding=bits --objective=x0"; do
      set -- $v; gen "$@"; RES=$(res "$OUT/gen-$1/ckpt.pt"); sample "$1" 3
      for R in 1 3; do
        subset "$OUT/sample-$1" "$OUT/sample-$1-R$R" $(( R * $(n_train) ))
        seg "$OUT/ablation/$1-R$R" --synthetic_dir="$OUT/sample-$1-R$R"
      done
    done
    seg "$OUT/ablation/real"
    drain; $PY report.py $COMMON --sweep_dir="$OUT/ablation" --baseline=real ;;
  baselines)
    gen bits; RES=$(res "$OUT/gen-bits/ckpt.pt"); sample bits 1
    seg "$OUT/baselines/none"
    seg "$OUT/baselines/cutout" --cutout=0.5
    seg "$OUT/baselines/cutmix" --cutmix=0.5
    seg "$OUT/baselines/copy_paste" --copy_paste=0.5
    seg "$OUT/baselines/synthetic" --synthetic_dir="$OUT/sample-bits"
    drain; $PY report.py $COMMON --sweep_dir="$OUT/baselines" --baseline=none ;;
  superres)
    # the paper's Tab. 2 / 6 setting: pairs lifted by G_SR to 2x, real data at 2x beside them
    gen bits; sample bits 1
    [ -f "$OUT/sr/ckpt.pt" ] || $PY train_gen.py $SR $COMMON --out_dir="$OUT/sr"
    $PY superres.py $SAMPLE $COMMON --mode=upsample --ckpt="$OUT/sr/ckpt.pt" \
      --in_dir="$OUT/sample-bits" --out_dir="$OUT/sample-bits-sr"
    RES=$(res "$OUT/sr/ckpt.pt")
    seg "$OUT/superres/real"
    seg "$OUT/superres/synthetic" --synthetic_dir="$OUT/sample-bits-sr"
    drain; $PY report.py $COMMON --sweep_dir="$OUT/superres" --baseline=real ;;
  image_only)
    gen bits; RES=$(res "$OUT/gen-bits/ckpt.pt"); sample bits 1
    gen none --label_encoding=none; sample none 1
    SEEDS=1 seg "$OUT/image_only/real"; drain
    for v in bits none; do
      $PY metrics.py $COMMON --real="$DATA/$DS" --fake="$OUT/sample-$v" \
        --seg_ckpt="$OUT/image_only/real/seed1/best.pt" --out_dir="$OUT/image_only/metrics-$v"
    done ;;
  lowdata)
    # The paper's claim at CPU scale, with an oracle: a small real set D (N_D patches) on which
    # real-only training saturates; G trained on D only, for a fixed number of iterations; seg at
    # G's resolution, every arm with R = 0's real samples; arms R0, generated R = 1, 3 and oracle
    # R = 1, 3: real pairs G never saw, as many as the generated ones. Toy (ORACLE=fresh): D, the
    # oracle and the selection set are new toy scenes (seeds disjoint from D and val). Any other
    # prepared dataset (ORACLE=split): disjoint groups of its train patches (prepare.py
    # --reader=lowdata, recorded in split.json), its val split reported. best.pt is picked on
    # the selection set, never on the reported val split; report.py gives the final and the
    # picked model.
    # The generated arms choose their pairs (since issue 15; `clean` in docs/RESULTS.md): R x |D|
    # of the first POOL x R x |D|, for D's rare classes (clean.py --keep, --temperature=2);
    # POOL=1 takes the pairs as they come (the paper, and lowdata's documented figures).
    lowdata_setup; RS=${RS_LOW:-1 3}; rmax=$(echo $RS | tr ' ' '\n' | sort -n | tail -n 1)
    gen bits; RES=$(res "$OUT/gen-bits/ckpt.pt"); sample bits $(( POOL * rmax ))
    # the oracle's pairs: FRESH's train split at G's resolution, as D is (skipped once written)
    $PY pairs.py export_split "$DATA/$FRESH" "$OUT/oracle" "$RES"
    seg "$OUT/lowdata/R0" --select_data="$DATA/$FRESH"
    # the control: R = 0 for as many iterations as the R > 0 arms (so twice the real samples): a
    # gain of R > 0 over R0 that R0-long also has is the longer schedule, not the synthetic pairs
    seg "$OUT/lowdata/R0-long" --select_data="$DATA/$FRESH" --max_iters=$(( 2 * ITERS ))
    for R in $RS; do
      for arm in bits oracle; do
        src="$OUT/sample-bits"; [ $arm = oracle ] && src="$OUT/oracle"
        if [ $arm = bits ] && [ "$POOL" -gt 1 ]; then
          subset "$src" "$OUT/pool-R$R" $(( POOL * R * N ))
          [ -f "$OUT/bits-R$R/clean.json" ] || $PY clean.py $COMMON --in_dir="$OUT/pool-R$R" \
            --out_dir="$OUT/bits-R$R" --keep=$(( R * N )) --temperature=2 > /dev/null
        else
          subset "$src" "$OUT/$arm-R$R" $(( R * N ))
        fi
        seg "$OUT/lowdata/${arm/bits/gen}-R$R" --select_data="$DATA/$FRESH" --synthetic_dir="$OUT/$arm-R$R"
      done
    done
    drain  # the gains over R0-long too (report-vs-R0-long.*), then over R0 (report.*)
    $PY report.py $COMMON --sweep_dir="$OUT/lowdata" --baseline=R0-long > /dev/null
    for f in md json; do mv "$OUT/lowdata/report.$f" "$OUT/lowdata/report-vs-R0-long.$f"; done
    $PY report.py $COMMON --sweep_dir="$OUT/lowdata" --baseline=R0
    [ -f "$OUT/lowdata/metrics/metrics.json" ] || $PY metrics.py $COMMON --real="$DATA/$LOW" \
      --fake="$OUT/sample-bits" --seg_ckpt="$OUT/lowdata/R0/seed${SEEDS%% *}/best.pt" \
      --out_dir="$OUT/lowdata/metrics" ;;
  generators)
    # Issue 21, on lowdata's protocol (run `lowdata` first): generator options, each a GENS line
    # (name + train_gen.py overrides on top of GEN_LOW), trained on D for GEN_LOW's iterations;
    # each samples and chooses its pairs as lowdata does (POOL x 3 x |D|, clean.py --keep for
    # rare classes) and trains the segmenter at R = 3 (compare_generators). lowdata's R0,
    # R0-long, oracle-R3 and its generator's gen-R3 (as `x0`, the recipe) are linked beside
    # them; report.py over R0 and over R0-long; metrics.py per option with lowdata's R0
    # segmenter (consistency, colour, FID, memorisation).
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); G=$OUT/generators; mkdir -p "$G/seg"
    ln -sfn "$(realpath "$OUT/lowdata/gen-R3")" "$G/seg/x0-R3"
    compare_generators "$G" "${GENS:-"selfcond --self_condition=True
v-minsnr --objective=v --loss_weighting=min_snr"}" ;;
  compute)
    # Issue 25 (5) and issue 21's training-length curve, on lowdata's protocol (run `lowdata`
    # first, with R = 3 among RS_LOW): the captured fraction and the consistency of the pairs
    # against the generator's compute. One G per ITERS_CURVE value k (default 1000 2500 5000
    # 10000), named `it<k>`: GEN_LOW with CURVE's train_gen.py overrides (none by default; e.g.
    # CURVE="--objective=v --loss_weighting=min_snr" for a v + min-SNR curve) and
    # --max_iters=k, each through the steps of `generators` (compare_generators: POOL x 3 x |D|
    # pairs, 3 x |D| chosen, seg at R = 3 beside lowdata's R0, R0-long and oracle-R3, report.py,
    # metrics.py). The point at lowdata's own G iterations (the max_iters of its gen-bits
    # checkpoint's config) is lowdata's, not made again, when CURVE is empty and lowdata chose
    # its R = 3 pairs from the same POOL x 3 x |D| (its bits-R3/clean.json says): its G, pool,
    # chosen pairs and gen-R3 runs are linked in (their clean.json stops the resampling). A
    # lowdata run with POOL=1 (pairs as they come: no clean.json, no pool-R3) has no such
    # point, so it is trained here like the others. Then one table and compute.png (tables.py
    # --table=compute: exp_dir/compute.md).
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); C=$OUT/compute; mkdir -p "$C/seg"
    ITERS_CURVE=${ITERS_CURVE:-1000 2500 5000 10000}
    low_iters=$(ckpt "$OUT/gen-bits/ckpt.pt" config max_iters)
    low_pool=0  # the pool lowdata chose its R = 3 pairs from (0: it did not choose them)
    if [ -f "$OUT/bits-R3/clean.json" ]; then
      low_pool=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['n_in'])" \
        "$OUT/bits-R3/clean.json")
    fi
    # Each G continues the previous point's (the next smaller k): train_gen.py's learning rate
    # does not depend on max_iters and its resume is exact (tests/test_train_gen.py), so G
    # resumed from k1 to k2 is the G trained straight to k2, for k2 - k1 iterations, not k2.
    # (A run killed after the copy resumes from it: the check is the iteration, not the file.)
    prev=
    for k in $(echo $ITERS_CURVE | tr ' ' '\n' | sort -n); do
      g=$C/gen-it$k
      if [ -z "${CURVE:-}" ] && [ "$k" = "$low_iters" ] && [ "$low_pool" = $(( POOL * 3 * N )) ]
      then  # lowdata's G, its pool and chosen pairs, its gen-R3 segmenters
        ln -sfn "$(realpath "$OUT/gen-bits")" "$g"
        ln -sfn "$(realpath "$OUT/pool-R3")" "$C/pool-it$k"
        ln -sfn "$(realpath "$OUT/bits-R3")" "$C/it$k-R3"
        ln -sfn "$(realpath "$OUT/lowdata/gen-R3")" "$C/seg/it$k-R3"
      fi
      if [ ! -f "$g/ckpt.pt" ] && [ -n "$prev" ]; then
        mkdir -p "$g"; cp "$prev/ckpt.pt" "$g/ckpt.pt.tmp"; mv "$g/ckpt.pt.tmp" "$g/ckpt.pt"
      fi
      if [ ! -f "$g/ckpt.pt" ]; then  # the first point: from scratch
        (OUT=$C; gen "it$k" ${CURVE:-} --max_iters=$k)
      elif [ "$(ckpt "$g/ckpt.pt" iter_num)" -lt "$k" ]; then
        $PY train_gen.py $GEN $COMMON --out_dir="$g" ${CURVE:-} --max_iters=$k --init_from=resume
      fi
      prev=$g
    done
    options=$(for k in $ITERS_CURVE; do echo "it$k ${CURVE:-} --max_iters=$k"; done)
    compare_generators "$C" "$options"
    $PY tables.py --table=compute --exp_dir="$C" ;;
  segbf16)
    # Issue 25 (1): the segmenter in bf16 autocast + channels_last on CPU against fp32. lowdata's
    # R0 and gen-R3 in fp32 (run here for any SEEDS lowdata skipped; lowdata's own runs must be
    # fp32, so a lowdata run with the bf16 toy recipe needs SEG_LOW="... --dtype=float32
    # --channels_last=False") again in bf16 with the same seeds, iterations, data and pairs into
    # $OUT/segbf16; report.py there gives each arm's bf16 mIoU and bf16's gen-R3 gain over bf16's
    # R0, beside lowdata's fp32 report.
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); B=$OUT/segbf16; mkdir -p "$B"
    FP32="--dtype=float32 --channels_last=False"
    seg "$OUT/lowdata/R0" --select_data="$DATA/$FRESH" $FP32
    seg "$OUT/lowdata/gen-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$OUT/bits-R3" $FP32
    drain
    for s in $SEEDS; do
      for c in "$OUT/lowdata/R0/seed$s/config.json" "$OUT/lowdata/gen-R3/seed$s/config.json"; do
        $PY -c "import json, sys; sys.exit(json.load(open(sys.argv[1]))['dtype'] != 'float32')" \
          "$c" || { echo "$c: not an fp32 run; segbf16 compares bf16 with lowdata's fp32 runs"\
          "(run lowdata with SEG_LOW=\"... --dtype=float32 --channels_last=False\")"; exit 2; }
      done
    done
    SEG="$SEG --dtype=bfloat16 --channels_last=True"
    seg "$B/R0" --select_data="$DATA/$FRESH"
    seg "$B/gen-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$OUT/bits-R3"
    drain
    $PY report.py $COMMON --sweep_dir="$B" --baseline=R0 ;;
  segmenters)
    # Issue 23, the paper's Tab. 2 at CPU scale, on lowdata's protocol (run `lowdata` first, with
    # R = 3 among RS_LOW): each SEGS architecture trained as lowdata trains the FPN (R0, R0-long,
    # gen-R3, oracle-R3; SEEDS; SEG_LOW's recipe and budget, so ResNet-18 for the ResNet-based
    # ones), on the same pairs for all (lowdata's chosen bits-R3, its oracle-R3); the FPN's rows
    # are lowdata's own runs. report.py per architecture over R0 and over R0-long, and one table
    # (tables.py --table=segmenters: exp_dir/segmenters.md), both rewritten as each architecture
    # finishes.
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); S=$OUT/segmenters
    SEGS=${SEGS:-pspnet farseg pfsegnet segformer_b0}
    report_arch() {  # report_arch A: report.py over R0-long, then over R0, for S/A
      $PY report.py $COMMON --sweep_dir="$S/$1" --baseline=R0-long > /dev/null
      for f in md json; do mv "$S/$1/report.$f" "$S/$1/report-vs-R0-long.$f"; done
      $PY report.py $COMMON --sweep_dir="$S/$1" --baseline=R0 > /dev/null
    }
    mkdir -p "$S/fpn"
    for arm in R0 R0-long gen-R3 oracle-R3; do
      ln -sfn "$(realpath "$OUT/lowdata/$arm")" "$S/fpn/$arm"
    done
    report_arch fpn
    for a in $SEGS; do  # one architecture at a time, its report and the table as it finishes (a
      seg "$S/$a/R0" --select_data="$DATA/$FRESH" --arch=$a  # killed experiment keeps them)
      seg "$S/$a/R0-long" --select_data="$DATA/$FRESH" --max_iters=$(( 2 * ITERS )) --arch=$a
      for arm in bits oracle; do
        seg "$S/$a/${arm/bits/gen}-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$OUT/$arm-R3" \
          --arch=$a
      done
      drain; report_arch "$a"
      $PY tables.py --table=segmenters --exp_dir="$S" > /dev/null
    done
    $PY tables.py --table=segmenters --exp_dir="$S" ;;
  steps)
    # Sampling steps vs quality and vs the downstream gain, on lowdata's G and protocol (run
    # `lowdata` first). Pairs (3 x |D|) from DDIM and DPM-Solver++(2M) at each of STEPS and from
    # DDPM-1000: class TVD, consistency, FID / sFID (metrics.py, R0's segmenter); seg at R = 3
    # for STEPS_SEG (default ddim-10 dpm++-10 ddim-20 dpm++-20 ddpm-1000), beside lowdata's R0,
    # gen-R3 (DDIM-50, the same pairs as ddim-50 here) and oracle-R3 (report.py, over R0).
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); S=$OUT/steps; mkdir -p "$S/seg"
    for v in $(for k in ${STEPS:-5 10 20 50 100}; do echo ddim-$k dpm++-$k; done) ddpm-1000; do
      $PY sample.py $COMMON --ckpt="$OUT/gen-bits/ckpt.pt" --out_dir="$S/sample-$v" \
        --sampler=${v%-*} --steps=${v##*-} --num_samples=$(( 3 * N )) --batch_size=96 > /dev/null
      [ -f "$S/metrics-$v/metrics.json" ] || $PY metrics.py $COMMON --real="$DATA/$LOW" \
        --fake="$S/sample-$v" --seg_ckpt="$OUT/lowdata/R0/seed${SEEDS%% *}/best.pt" \
        --out_dir="$S/metrics-$v" > /dev/null
    done
    for v in ${STEPS_SEG:-ddim-10 dpm++-10 ddim-20 dpm++-20 ddpm-1000}; do
      seg "$S/seg/$v-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$S/sample-$v"
    done
    drain
    for a in R0 gen-R3 oracle-R3; do ln -sfn "$(realpath "$OUT/lowdata/$a")" "$S/seg/$a"; done
    $PY report.py $COMMON --sweep_dir="$S/seg" --baseline=R0
    $PY tables.py --table=steps --exp_dir="$S"  # pair quality by sampler and steps; steps.png
    ;;
  clean)
    # Beyond the paper, on lowdata's G and protocol (run `lowdata` first): clean.py's options,
    # each alone (CLEAN: name + overrides, one per line), at R = 3 and 1, beside lowdata's R0,
    # gen-R<k> (the same pairs uncleaned) and oracle-R<k>. One pool of 9 x |D| DDIM-50 pairs with
    # bit margins: its first 3 x |D| are lowdata's pairs (same seeds and batches); the filters
    # clean those (R = 1: the first |D| of them), `select` keeps R x |D| of the first 3R x |D|.
    # The consistency filter uses lowdata's first R0 segmenter (trained on D alone). "Plain" =
    # lowdata's gen-R<k>: run lowdata with POOL=1 first (its default chooses pairs since then).
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); C=$OUT/clean; mkdir -p "$C/seg"
    $PY sample.py --sampler=ddim --steps=50 $COMMON --ckpt="$OUT/gen-bits/ckpt.pt" \
      --out_dir="$C/pool" --num_samples=$(( 9 * N )) --save_margin=True > /dev/null
    SEG0="$OUT/lowdata/R0/seed${SEEDS%% *}/best.pt"
    CLEAN=${CLEAN:-"area --min_area=4
margin --margin=0.25
consistency --seg_ckpt=$SEG0 --tol=1.25
select --keep=KEEP --temperature=2
area-select --min_area=4 --keep=KEEP --temperature=2"}  # the two best alone at R = 3: a pair
    for R in ${RS_CLEAN:-3 1}; do
      while read -r name opts; do
        if [[ $opts == *KEEP* ]]; then  # a selection: R x |D| of 3R x |D|
          subset "$C/pool" "$C/pool-$(( 3 * R ))" $(( 3 * R * N )); in=$C/pool-$(( 3 * R ))
        else  # a filter: the pairs of gen-R<k>, cleaned
          subset "$C/pool" "$C/pool-$R" $(( R * N )); in=$C/pool-$R
        fi
        [ -f "$C/$name-R$R/clean.json" ] || $PY clean.py $COMMON --in_dir="$in" \
          --out_dir="$C/$name-R$R" ${opts//KEEP/$(( R * N ))} > "$C/$name-R$R.out"
        seg "$C/seg/$name-R$R" --select_data="$DATA/$FRESH" --synthetic_dir="$C/$name-R$R"
      done <<< "$CLEAN"
    done
    drain
    for a in R0 gen-R1 gen-R3 oracle-R1 oracle-R3; do
      ln -sfn "$(realpath "$OUT/lowdata/$a")" "$C/seg/$a"
    done
    $PY report.py $COMMON --sweep_dir="$C/seg" --baseline=R0 > /dev/null
    $PY tables.py --table=clean --exp_dir="$C"  # the options, what they changed, the gains
    ;;
  bf16)
    # Issue 14's rule for the CPU generator recipe: the toy generator (GEN_BF16, 30 minutes)
    # trained in fp32 and in bf16 autocast with the SAME wall-clock budget, in CHUNKS alternating
    # CHUNK-minute pieces (fp32, bf16, fp32, ...; each resumed exactly from its ckpt.pt, so a busy
    # machine slows both alike), and bf16 again stopped at fp32's iteration count (resumed from
    # its own chunk checkpoint). Each G samples the same N_BF16 (512) seeds (SAMPLE, in fp32);
    # metrics.py scores them against D with a segmenter trained on D. bf16 earns the recipe if
    # it is no worse.
    B=$OUT/bf16; CHUNK=${CHUNK:-5}; mkdir -p "$B"; GEN_BF16=${GEN_BF16:-configs/gen_toy.py}
    for k in $(seq ${CHUNKS:-6}); do
      for d in float32 bfloat16; do
        g=$B/gen-$d; [ "$(cat "$g/chunks" 2> /dev/null)" -ge $k ] 2> /dev/null && continue
        $PY train_gen.py $GEN_BF16 $COMMON --dtype=$d --max_minutes=$CHUNK \
          --out_dir="$g" $([ -f "$g/ckpt.pt" ] && echo --init_from=resume) > "$g.out" 2>&1
        [ $d = bfloat16 ] && cp "$g/ckpt.pt" "$g/ckpt-$(ckpt "$g/ckpt.pt" iter_num).pt"
        echo $k > "$g/chunks"
      done
    done
    n=$(ckpt "$B/gen-float32/ckpt.pt" iter_num); g=$B/gen-bfloat16-iters
    if [ ! -f "$g/ckpt.pt" ]; then  # from bf16's last chunk checkpoint at or before fp32's count
      mkdir -p "$g"; from=$(ls "$B/gen-bfloat16" | sed -n 's/^ckpt-\([0-9]*\)\.pt$/\1/p' |
        sort -n | awk -v n=$n '$1 <= n' | tail -n 1)
      [ -n "$from" ] && cp "$B/gen-bfloat16/ckpt-$from.pt" "$g/ckpt.pt"  # (none: from scratch)
      $PY train_gen.py $GEN_BF16 $COMMON --dtype=bfloat16 --max_minutes=0 --max_iters=$n \
        --out_dir="$g" $([ -n "$from" ] && echo --init_from=resume) > "$g.out" 2>&1
    fi
    RES=$(res "$B/gen-float32/ckpt.pt"); SEEDS=1 seg "$B/real"; drain
    for v in float32 bfloat16 bfloat16-iters; do
      $PY sample.py $SAMPLE $COMMON --ckpt="$B/gen-$v/ckpt.pt" --out_dir="$B/sample-$v" \
        --num_samples=${N_BF16:-512} --dtype=float32 > /dev/null
      [ -f "$B/metrics-$v/metrics.json" ] || $PY metrics.py $COMMON --real="$DATA/$DS" \
        --fake="$B/sample-$v" --seg_ckpt="$B/real/seed1/best.pt" --out_dir="$B/metrics-$v" \
        > /dev/null
    done
    $PY tables.py --table=bf16 --exp_dir="$B"  # iterations, last val losses, pair quality
    ;;
  conditional)
    # Issue 24, on lowdata's protocol (run `lowdata` first, with R = 3 among RS_LOW): the
    # conditional variants on the one UNet and training loop, each trained on D for GEN_LOW's
    # iterations (equal generator compute with lowdata's G) and sampled with SAMPLE's sampler and
    # steps. mask2img (train_gen.py --cond=mask: images given masks) makes two arms at R = 3:
    # mask2img-real-R3, three new images for each of D's own masks (FreeMask's setting), and
    # mask2img-layouts-R3, an image for each mask of lowdata's chosen G pairs (bits-R3: the
    # layout from G, the appearance from mask2img). SegDiff (--cond=image: masks given images) is
    # a segmenter trained on D: the masks it samples for the reported val images, scored as
    # seg.py scores (sample.py writes results.json), one generator per seed, MEAN_OF samples
    # averaged. Beside lowdata's R0, R0-long, gen-R3 (as joint-R3) and oracle-R3; report.py
    # over R0 and over R0-long; metrics.py on each new pair folder with lowdata's R0 segmenter.
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); C=$OUT/conditional; mkdir -p "$C/seg"
    OUT_LOW=$OUT; OUT=$C
    gen mask2img --cond=mask
    $PY pairs.py export_split "$DATA/$DS" "$C/d" "$RES"        # D's own pairs at G's size
    $PY pairs.py export_split "$DATA/$DS" "$C/val" "$RES" val  # the reported split
    $PY sample.py $SAMPLE $COMMON --ckpt="$C/gen-mask2img/ckpt.pt" --in_dir="$C/d" \
      --out_dir="$C/mask2img-real-R3" --ratio=3
    $PY sample.py $SAMPLE $COMMON --ckpt="$C/gen-mask2img/ckpt.pt" --in_dir="$OUT_LOW/bits-R3" \
      --out_dir="$C/mask2img-layouts-R3" --ratio=1
    for arm in mask2img-real mask2img-layouts; do
      seg "$C/seg/$arm-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$C/$arm-R3"
    done
    for s in $SEEDS; do  # SegDiff: one generator per seed, scored on val
      gen img2mask-seed$s --cond=image --seed=$s
      $PY sample.py $SAMPLE $COMMON --ckpt="$C/gen-img2mask-seed$s/ckpt.pt" --in_dir="$C/val" \
        --out_dir="$C/seg/segdiff/seed$s" --ratio=1 --mean_of=${MEAN_OF:-1} > /dev/null
    done
    drain
    ln -sfn "$(realpath "$OUT_LOW/lowdata/gen-R3")" "$C/seg/joint-R3"
    for a in R0 R0-long oracle-R3; do ln -sfn "$(realpath "$OUT_LOW/lowdata/$a")" "$C/seg/$a"; done
    $PY report.py $COMMON --sweep_dir="$C/seg" --baseline=R0-long > /dev/null
    for f in md json; do mv "$C/seg/report.$f" "$C/seg/report-vs-R0-long.$f"; done
    $PY report.py $COMMON --sweep_dir="$C/seg" --baseline=R0
    for arm in mask2img-real mask2img-layouts; do
      [ -f "$C/metrics-$arm/metrics.json" ] || $PY metrics.py $COMMON --real="$DATA/$DS" \
        --fake="$C/$arm-R3" --seg_ckpt="$OUT_LOW/lowdata/R0/seed${SEEDS%% *}/best.pt" \
        --out_dir="$C/metrics-$arm" > /dev/null
    done ;;
  direct2x)
    # Issue 24, the paper's Tab. 4: G + G_SR against a G trained directly at twice G's size, both
    # into seg at 2x, on lowdata's protocol. Run lowdata twice first: as usual (OUT) and with
    # GEN_LOW's G at twice the size into OUT_2X, its lowdata folder (e.g. OUT=out-exp-dubai64
    # GEN_LOW="... --image_size=64 --ch_mult=(1,2,2,2)": OUT_2X=out-exp-dubai64-split64). That
    # run gives R0, R0-long, oracle-R3 and direct-R3 (its gen-R3) at 2x. Here G_SR (SR_LOW, on D
    # for as many iterations as G) lifts lowdata's chosen bits-R3 to 2x with SAMPLE's sampler and
    # seg trains on them at 2x as the 2x run's arms did; report.py over R0 and over R0-long.
    lowdata_setup; RES=$(res "$OUT/gen-bits/ckpt.pt"); RES2=$(( 2 * RES )); T=$OUT/direct2x
    if [ -z "${OUT_2X:-}" ] || [ ! -f "$OUT_2X/gen-bits/ckpt.pt" ] \
       || [ "$(res "$OUT_2X/gen-bits/ckpt.pt")" != $RES2 ]; then
      echo "direct2x: OUT_2X must be a lowdata folder whose G makes ${RES2}x$RES2 pairs (see above)"
      exit 2
    fi
    OUT_LOW=$OUT; OUT=$T; mkdir -p "$T/seg"
    GEN=${SR_LOW:-configs/sr_toy.py --max_minutes=0 --max_iters=2500}
    gen sr --image_size=$RES2
    $PY superres.py $SAMPLE $COMMON --mode=upsample --ckpt="$T/gen-sr/ckpt.pt" \
      --in_dir="$OUT_LOW/bits-R3" --out_dir="$T/gsr-R3" > /dev/null
    RES=$RES2; seg "$T/seg/gsr-R3" --select_data="$DATA/$FRESH" --synthetic_dir="$T/gsr-R3"
    drain
    ln -sfn "$(realpath "$OUT_2X/lowdata/gen-R3")" "$T/seg/direct-R3"
    for a in R0 R0-long oracle-R3; do ln -sfn "$(realpath "$OUT_2X/lowdata/$a")" "$T/seg/$a"; done
    $PY report.py $COMMON --sweep_dir="$T/seg" --baseline=R0-long > /dev/null
    for f in md json; do mv "$T/seg/report.$f" "$T/seg/report-vs-R0-long.$f"; done
    $PY report.py $COMMON --sweep_dir="$T/seg" --baseline=R0 ;;
  *) sed -n '2,51p' "$0"; exit 2 ;;
esac
