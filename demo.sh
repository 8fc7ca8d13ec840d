#!/usr/bin/env bash
# The embedded demo, on the procedurally generated toy data and a CPU (about 15 minutes on 2 cores):
#   prepare.py -> train_gen.py -> sample.py (fast DDIM) -> seg.py on D and on D + D' -> metrics.py
# and a results table (mIoU / F1 on D vs D + D', FID / sFID / IS, consistency) plus grid.png.
#   bash demo.sh                 # what `make demo` runs
#   DEMO_TINY=1 bash demo.sh     # tiny configs, seconds per stage (tests/test_demo.py)
# Every line below is a stage you can also run by hand; outputs go to $OUT (default out-demo).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python}
OUT=${OUT:-out-demo}
DATA=${DATA:-data}
if [ "${DEMO_TINY:-0}" = 1 ]; then  # a few iterations of tiny networks: checks the plumbing only
  DS=demo_tiny; PREP="--n_train=8 --n_val=4"
  GEN="configs/tiny.py --image_size=32"; SAMPLE="configs/tiny.py --num_samples=8"
  SEG="configs/tiny.py --image_size=32"
else  # the CPU recipes: 32x32 generator for GEN_MINUTES, FPN-ResNet18 at 32x32 (G's resolution)
  DS=toy; PREP=""
  GEN="configs/gen_toy.py --max_minutes=${GEN_MINUTES:-6}"
  SAMPLE="--sampler=ddim --steps=50 --ratio=1"
  SEG="configs/seg_toy.py --image_size=32 --crop_size=32 --max_iters=${SEG_ITERS:-300} --eval_interval=300"
fi
COMMON="--data_dir=$DATA --dataset=$DS"
t0=$(date +%s)
[ -f "$DATA/$DS/meta.json" ] || $PY prepare.py configs/toy.py $COMMON $PREP
$PY train_gen.py $GEN $COMMON --out_dir=$OUT/gen
$PY sample.py $SAMPLE $COMMON --ckpt=$OUT/gen/ckpt.pt --out_dir=$OUT/sample
$PY seg.py $SEG $COMMON --out_dir="$OUT/seg/D/seed1337"
$PY seg.py $SEG $COMMON --out_dir="$OUT/seg/D+Dsyn/seed1337" --synthetic_dir=$OUT/sample
$PY metrics.py $COMMON --real=$DATA/$DS --fake=$OUT/sample --seg_ckpt=$OUT/seg/D/seed1337/ckpt.pt \
  --out_dir=$OUT/metrics
$PY report.py $COMMON --sweep_dir=$OUT/seg --baseline=D > /dev/null
echo
echo "== satsynth demo: $DS data, $(( $(date +%s) - t0 )) s =="
cat "$OUT/seg/report.md"
$PY - "$OUT/metrics/metrics.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
f = lambda v: 'n/a' if v is None else f'{v:.2f}'
print(f"\ngenerated pairs ({m['n_fake']} at {m['resolution']}x{m['resolution']}) against "
      f"{m['n_real']} real: FID {f(m['fid'])}, sFID {f(m['sfid'])}, IS {f(m['is_mean'])} "
      f"(real {f(m['is_real_mean'])}), consistency mIoU {100 * m['consistency_miou']:.2f}, "
      f"class-frequency TVD {m['class_freq_tvd']:.3f}")
PYEOF
echo "grid of generated pairs: $OUT/sample/grid.png"
