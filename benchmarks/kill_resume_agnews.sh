#!/usr/bin/env bash
# Needs a finished `nlpkit run recipes/agnews.yaml` in runs/agnews (the uninterrupted reference).
# Issue 7 must-show: agnews with BERT killed by SIGKILL mid-run, then re-run; compare with the uninterrupted run.
set -u
cd "$(dirname "$0")/.."
export OUT; export NLPKIT_DATA="${NLPKIT_DATA:-../shared/data}"
OUT="${OUT:-/tmp/nlpkit-kill}"
rm -rf $OUT && mkdir -p $OUT/runs/agnews
cp -r runs/agnews/classification-lstm-seed* runs/agnews/classification-attention-seed* $OUT/runs/agnews/
ARGS="--set output=$OUT/runs --set reports=$OUT/reports --set train.progress=false --set models.bert.seeds=[1]"
nlpkit run recipes/agnews.yaml $ARGS > $OUT/first.log 2>&1 &
PID=$!
# wait until BERT passed step 800 (a checkpoint exists at 750), then SIGKILL
until grep -q '"step": 800,' $OUT/runs/agnews/classification-bert-seed1/metrics.jsonl 2>/dev/null; do sleep 2; done
kill -9 $PID; sleep 1
echo "killed at: $(tail -1 $OUT/runs/agnews/classification-bert-seed1/metrics.jsonl | cut -c1-60)"
ls $OUT/runs/agnews/classification-bert-seed1/checkpoints/
nlpkit run recipes/agnews.yaml $ARGS > $OUT/second.log 2>&1
cat $OUT/second.log
python3 - <<'PY'
import json, os
a = json.load(open("runs/agnews/classification-bert-seed1/results.json"))
b = json.load(open(os.environ.get("OUT", "/tmp/nlpkit-kill") + "/runs/agnews/classification-bert-seed1/results.json"))
print("uninterrupted test:", a["test"], "val:", a["validation"])
print("killed+resumed test:", b["test"], "val:", b["validation"])
print("identical test metrics:", a["test"] == b["test"], "identical validation:", a["validation"] == b["validation"])
pa = open("runs/agnews/classification-bert-seed1/predictions.jsonl").read()
pb = open(os.environ.get("OUT", "/tmp/nlpkit-kill") + "/runs/agnews/classification-bert-seed1/predictions.jsonl").read()
print("identical predictions.jsonl:", pa == pb)
PY
