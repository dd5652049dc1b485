#!/usr/bin/env bash
# keepalived VRRPv3 failover in the FerroLB lab: the reference FerroLB's layer2 failover is
# compared with (docs/benchmarks.md, "layer2").
#
#   FERROLB_LAB_PREFIX=fbk- cargo xtask lab up --nodes 3     # any lab with node1 and node2
#   sudo TRIALS=10 benches/l2/keepalived-failover.sh [advert_int ...]   # default: 1 0.1
#
# keepalived runs VRRP only (-P) on node1 (priority 150) and node2 (priority 100) for VIP
# 192.0.2.20 (VIP=). Per trial: the client pings the VIP every 5 ms while tcpdump on the client's
# eth0 records echo replies and ARP with source MACs; after a random delay U(0, advert_int) a fault
# is injected on node1 at t0; result = t0 -> first echo reply from node2's MAC. Faults (FAULTS=):
#   linkdown  node1's switch port down (the node dies; node1 has no say)
#   kill      SIGKILL keepalived (parent and VRRP child) on node1: a crash, the VIP stays on node1
#   term      SIGTERM keepalived on node1: graceful, priority-0 advert, VIP removed
# node1 is restored and must be sole master again before the next trial.
# Output: $OUT/trials.jsonl (one JSON object per trial), $OUT/summary.tsv, raw captures.
set -euo pipefail
source "$(dirname "$0")/common.sh"
ADVERTS=("${@:-1 0.1}")
read -r -a ADVERTS <<< "${ADVERTS[*]}"
FAULTS=${FAULTS:-linkdown kill term}
VIP=${VIP:-192.0.2.20}
need_lab node1 node2 client sw
command -v keepalived > /dev/null || { echo "keepalived is not installed" >&2; exit 2; }
mkdir -p "$OUT"
KA_DIR="$RUN_DIR/keepalived"
mkdir -p "$KA_DIR"
N1=$(node_mac node1); N2=$(node_mac node2)

ka_start() { # <node> <advert_int>
  local node=$1 adv=$2 prio=100 dir="$KA_DIR/$1"
  [ "$node" = node1 ] && prio=150
  mkdir -p "$dir"
  sed -e "s/@PRIO@/$prio/" -e "s/@ADV@/$adv/" -e "s/@RID@/$node/" -e "s/@VIP@/$VIP/" \
    "$L2DIR/keepalived.conf.tmpl" > "$dir/keepalived.conf"
  rm -f "$dir/keepalived.pid" "$dir/vrrp.pid"
  # -n foreground, -P VRRP only, -R no respawn of a dead child, -l -D -G log to the console only
  ip netns exec "${P}$node" setsid keepalived -n -P -R -l -D -G -f "$dir/keepalived.conf" \
    -p "$dir/keepalived.pid" -r "$dir/vrrp.pid" >> "$dir/keepalived.log" 2>&1 < /dev/null &
}
ka_pids() { # <node>: pids from the pid files that are alive
  local f
  for f in "$KA_DIR/$1/vrrp.pid" "$KA_DIR/$1/keepalived.pid"; do
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
  done
  return 0
}
ka_stop() { # <node> <TERM|KILL>
  local pids
  pids=$(ka_pids "$1")
  [ -n "$pids" ] && kill -s "$2" $pids 2>/dev/null
  return 0
}
ka_wait_gone() { # <node>
  for _ in $(seq 100); do [ -z "$(ka_pids "$1")" ] && return 0; sleep 0.1; done
  echo "keepalived on $1 did not stop" >&2; return 1
}
has_vip() { ip -n "${P}$1" -br addr show dev eth0 | grep -q " $VIP/32"; }
wait_master1() {
  for _ in $(seq 300); do
    if has_vip node1 && ! has_vip node2; then return 0; fi
    sleep 0.1
  done
  echo "node1 did not become the only master within 30 s" >&2; return 1
}
cleanup() {
  for n in node1 node2; do ka_stop "$n" TERM; done
  sleep 1
  for n in node1 node2; do ka_stop "$n" KILL; ip -n "${P}$n" addr del "$VIP/32" dev eth0 2>/dev/null || true; done
  ip -n "${P}sw" link set node1 up 2>/dev/null || true
}
trap cleanup EXIT

{ describe_machine; echo "bench: keepalived $(keepalived --version 2>&1 | head -1), VIP $VIP, lab $P, trials $TRIALS, advert_int ${ADVERTS[*]}, faults $FAULTS"; } | tee "$OUT/machine.txt"
for adv in "${ADVERTS[@]}"; do
  cleanup
  ka_start node2 "$adv"; sleep 0.2; ka_start node1 "$adv"
  wait_master1; sleep 1
  secs=$(python3 -c "print(max(3, int(3*float('$adv')+4)))")
  for fault in $FAULTS; do
    for i in $(seq "$TRIALS"); do
      base="$OUT/keepalived-adv$adv-$fault-$i"
      capture_start "$base" "$VIP" "$secs"
      sleep 1
      random_phase "$adv"
      t0=$(now)
      case $fault in
        linkdown) ip -n "${P}sw" link set node1 down ;;
        kill) ka_stop node1 KILL ;;
        term) ka_stop node1 TERM ;;
      esac
      capture_stop
      $STATS trial "$base.tcpdump" "$t0" "$VIP" "$N2" "$N1" impl=keepalived "setting=advert_int $adv" \
        "fault=$fault" "trial=$i" "load1=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/trials.jsonl"
      case $fault in
        linkdown) ip -n "${P}sw" link set node1 up ;;
        kill) ka_wait_gone node1; ip -n "${P}node1" addr del "$VIP/32" dev eth0 2>/dev/null || true; ka_start node1 "$adv" ;;
        term) ka_wait_gone node1; ka_start node1 "$adv" ;;
      esac
      wait_master1; sleep 1
    done
  done
done
$STATS summary "$OUT/trials.jsonl" | tee "$OUT/summary.tsv"
echo "results: $OUT"
