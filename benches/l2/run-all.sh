#!/usr/bin/env bash
# All layer2 benchmarks in one run, in one lab (so the ratios compare numbers from the same run):
# keepalived VRRPv3 (advert_int 1 and 0.1), FerroLB failover, ARP reply latency vs the kernel.
#
#   sudo TRIALS=10 benches/l2/run-all.sh            # lab prefix fbk- (FERROLB_LAB_PREFIX=)
#
# Brings the lab up with the demo if it is not (XTASK=, default "cargo xtask"; LAB_UP_ARGS= e.g.
# --no-build) and tears it down at the end unless KEEP_LAB=1. Results under $OUT (default
# target/l2-bench/<UTC time>/{keepalived,ferrolb,arp}/).
#
# KEEPALIVED_ADVERTS= the advert_int values to run (default "1 0.1").
# The lab runs the speaker binary FERROLB_SPEAKER_BIN (default target/debug/ferrolb-speaker).
# RELEASE_SPEAKER_BIN=<path> (e.g. a copy of target/release/ferrolb-speaker): after the runs
# above, the lab's speakers are restarted with that binary and arp-latency.sh runs again into
# arp-release/ (ARP reply latency of an optimised build; the failover runs keep the first binary).
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
# shellcheck disable=SC2086
OUT=$BASE/keepalived "$L2DIR/keepalived-failover.sh" ${KEEPALIVED_ADVERTS:-1 0.1}
OUT=$BASE/ferrolb "$L2DIR/ferrolb-failover.sh"
OUT=$BASE/arp "$L2DIR/arp-latency.sh"
if [ -n "${RELEASE_SPEAKER_BIN:-}" ]; then
  # The release build may still be running (it is slow on a small machine): wait up to 15 min.
  for _ in $(seq 180); do [ -x "$RELEASE_SPEAKER_BIN" ] && break; sleep 5; done
  echo "== restarting the speakers with $RELEASE_SPEAKER_BIN"
  for pidfile in "$RUN_DIR"/speaker-node*.pid; do
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 2
  FERROLB_SPEAKER_BIN=$RELEASE_SPEAKER_BIN $XTASK lab up --no-build --nodes 3 > "$BASE/release-up.log" 2>&1
  # Wait until the demo Service IP is announced again by the new speakers.
  for _ in $(seq 60); do
    ip netns exec "${P}client" arping -c 1 -w 1 -I eth0 "${SVC_IP:-192.0.2.100}" 2>/dev/null | grep -q "reply from" && break
    sleep 1
  done
  sleep 3
  OUT=$BASE/arp-release "$L2DIR/arp-latency.sh"
fi
echo "== summary"
cat "$BASE/keepalived/summary.tsv" "$BASE/ferrolb/summary.tsv"
cat "$BASE/arp/arp-latency.jsonl"
[ -z "${RELEASE_SPEAKER_BIN:-}" ] || cat "$BASE/arp-release/arp-latency.jsonl"
echo "results: $BASE"
