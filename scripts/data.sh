#!/usr/bin/env bash
# Puts the full data sets where the tools and the full-data tests look for
# them: data/ in this repository (git-ignored). Tests need none of this: they
# use the slices committed under */testdata/. Where a directory of the data
# sets exists next to the clone (../shared/data, or $CLICKREC_DATA), data/
# links to it; otherwise this says where each file comes from. Every file is
# checked against its SHA-256.
#
#   scripts/data.sh          link or report, then verify
#   scripts/data.sh check    verify only
source "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
src=${CLICKREC_DATA:-$root/../shared/data}

# path under data/ · SHA-256 · public source
files=(
  "diginetica/train_sessions.txt.gz 4edb566e716d335abbb6549184747a0f179b5754f70a3f74ff463e547b75311b CIKM Cup 2016 Diginetica, SR-GNN/NARM preprocessing (train sessions)"
  "diginetica/test_cases.dev.tsv.gz 957e6a7b51c9e66b3cd1f2c12e52c662ac6e19442c8c1c779e181a0d99981427 CIKM Cup 2016 Diginetica test sessions, half, as prefix<TAB>target cases"
  "taobao/UserBehavior.time-slice.csv.gz f5b3280589a52148e16a2d37488ee51fb09556bac39296d953cd64cb26b8ef61 Alibaba Tianchi dataset 649 (UserBehavior.csv), a 1.92 h time slice"
  "yoochoose-100k/yoochoose-clicks-100k_train_full.txt.gz c0ce33f6a6042309e96f1ccb556a8b0c08dbf8a0dbe9e152d16df69d8704ae57 RecSys Challenge 2015 YooChoose clicks, a 100k-click sample (SessionId<TAB>ItemId<TAB>Time), training part"
  "yoochoose-100k/yoochoose-clicks-100k_test.txt.gz 3b6130bdf061463bf8b774c7fc429bfc01a28618d298b081df8855eb7dbb80d5 RecSys Challenge 2015 YooChoose clicks, the same sample's last day (test part)"
  "taobao/UserBehavior.user-tail-10k.csv 06ea4a11021807f050ab79af08807578748b5651749682de7fe1bf16eced9f70 Alibaba Tianchi dataset 649 (UserBehavior.csv), 114 users' full histories"
)

if [ "${1:-}" != check ]; then
  if [ -d "$src" ] && [ ! -e "$root/data" ]; then
    ln -s "$(cd "$src" && pwd)" "$root/data"
    log "data: data/ -> $(cd "$src" && pwd)"
  elif [ ! -e "$root/data" ]; then
    log "data: no data sets at $src (set CLICKREC_DATA to a directory holding them)."
    log "data: obtain these (research / non-commercial use; no licence allows more) and place them under data/:"
    for f in "${files[@]}"; do read -r path _ what <<<"$f"; log "  data/$path — $what"; done
    exit 0
  fi
fi
bad=0
for f in "${files[@]}"; do
  read -r path sum _ <<<"$f"
  if [ ! -f "$root/data/$path" ]; then log "data: missing data/$path"; continue; fi
  got=$(sha256sum "$root/data/$path" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then log "data: data/$path has SHA-256 $got, want $sum"; bad=1; fi
done
[ "$bad" = 0 ] && log "data: checked"
exit "$bad"
