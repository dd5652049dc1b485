#!/usr/bin/env bash
# All layer2 benchmarks in one run, in one lab (so the ratios compare numbers from the same run):
# keepalived VRRPv3 (advert_int 1 and 0.1), FerroLB failover, ARP reply latency vs the kernel.
#
#   sudo TRIALS=10 benches/l2/run-all.sh            # lab prefix fbk- (FERROLB_LAB_PREFIX=)
#
# Brings the lab up with the demo if it is not (XTASK=, default "cargo xtask"; LAB_UP_ARGS= e.g.
# --no-build) and tears it down at the end unless KEEP_LAB=1. Results under $OUT (default
# target/l2-bench/<UTC time>/{keepalived,ferrolb,arp}/).
set -euo pipefail
source "$(dirname "$0")/common.sh"
XTASK=${XTASK:-cargo xtask}
export XTASK TRIALS
BASE=$OUT
mkdir -p "$BASE"
# shellcheck disable=SC2086
$XTASK lab up --nodes 3 --demo ${LAB_UP_ARGS:-} 2>&1 | tee "$BASE/lab-up.log"
teardown() {
  [ "${KEEP_LAB:-0}" = 1 ] || $XTASK lab down
  pgrep -a -f "keepalived .*$RUN_DIR/keepalived" || true
}
trap teardown EXIT
OUT=$BASE/keepalived "$L2DIR/keepalived-failover.sh" 1 0.1
OUT=$BASE/ferrolb "$L2DIR/ferrolb-failover.sh"
OUT=$BASE/arp "$L2DIR/arp-latency.sh"
echo "== summary"
cat "$BASE/keepalived/summary.tsv" "$BASE/ferrolb/summary.tsv"
cat "$BASE/arp/arp-latency.jsonl"
echo "results: $BASE"
