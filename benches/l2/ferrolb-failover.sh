#!/usr/bin/env bash
# FerroLB layer2 failover in the lab, timed like benches/l2/keepalived-failover.sh.
#
#   FERROLB_LAB_PREFIX=fbk- cargo xtask lab up --nodes 3 --demo   # controller, speakers, demo Service
#   sudo TRIALS=10 benches/l2/ferrolb-failover.sh
#
# The demo Service's IPv4 address (SVC_IP=, default 192.0.2.100) is announced by one speaker. The
# owner is found from the client (arping: MAC -> node). Faults (FAULTS=) on the owner at t0, after a
# random delay U(0, 1 s):
#   linkdown  the owner's switch port down (the node dies)
#   kill      SIGKILL the owner's speaker (pid file in the lab run directory)
#   term      SIGTERM the owner's speaker (graceful: withdraw, leave the membership)
# Result = t0 -> first ICMP echo reply to the client's 5 ms ping from a MAC other than the old
# owner's, seen by tcpdump on the client's eth0. No reply within TIMEOUT (10 s) is recorded as
# failover_ms null, "timeout": true (after 2 timeouts in a row the fault's remaining trials are
# skipped: the speaker's failover does not work in this build).
#
# Probe: nothing in the lab answers ICMP for a Service IP (the demo's nftables rule only redirects
# TCP port 80). So that ping works, like kube-proxy's IPVS mode (Service IPs on kube-ipvs0 with
# arp_ignore), this script puts SVC_IP/32 on `lo` of every node and sets arp_ignore=1 and
# arp_announce=2 (all + eth0), so that the node kernels answer echo requests but never ARP for it:
# only the speaker's answers decide which node gets the traffic. Undone at exit.
#
# Restoring between trials: linkdown -> port up; kill/term -> `$XTASK lab up --no-build` restarts
# the missing speaker (XTASK=, default "cargo xtask"); then the owner must be stable for STABLE_S.
set -euo pipefail
source "$(dirname "$0")/common.sh"
FAULTS=${FAULTS:-linkdown kill term}
SVC_IP=${SVC_IP:-192.0.2.100}
TIMEOUT=${TIMEOUT:-10}
STABLE_S=${STABLE_S:-3}
NODES=${NODES:-3}
XTASK=${XTASK:-cargo xtask}
NODE_LIST=$(seq -f 'node%g' 1 "$NODES")
need_lab $NODE_LIST client sw cp
mkdir -p "$OUT"

speaker_pid() { cat "$RUN_DIR/speaker-$1.pid" 2>/dev/null; }
speaker_alive() { local pid; pid=$(speaker_pid "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
for n in $NODE_LIST; do
  speaker_alive "$n" || { echo "no live speaker on $n (pid file $RUN_DIR/speaker-$n.pid): lab up with a working speaker first" >&2; exit 2; }
done

KUBECTL=(ip netns exec "${P}cp" "$REPO/target/controlplane/kubectl" --kubeconfig "$RUN_DIR/controlplane/admin.kubeconfig")
# The speakers' membership needs the Secret ferrolb-memberlist (without it every Node counts as
# live and nothing fails over). Newer controllers create it; create it here if it is missing.
ensure_memberlist_secret() {
  if ! "${KUBECTL[@]}" -n ferrolb-system get secret ferrolb-memberlist > /dev/null 2>&1; then
    "${KUBECTL[@]}" -n ferrolb-system create secret generic ferrolb-memberlist \
      --from-literal=secretkey="$(head -c 32 /dev/urandom | base64)" > /dev/null
    echo "created Secret ferrolb-system/ferrolb-memberlist; waiting 8 s for the speakers to join"
    sleep 8
  fi
}

declare -A SAVED_SYSCTL
probe_setup() {
  local n k
  for n in $NODE_LIST; do
    for k in net.ipv4.conf.all.arp_ignore net.ipv4.conf.eth0.arp_ignore net.ipv4.conf.all.arp_announce net.ipv4.conf.eth0.arp_announce; do
      [ -n "${SAVED_SYSCTL[$n/$k]:-}" ] || SAVED_SYSCTL[$n/$k]=$(ip netns exec "${P}$n" sysctl -n "$k")
    done
    ip netns exec "${P}$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1 \
      net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_announce=2
    ip -n "${P}$n" addr replace "$SVC_IP/32" dev lo
  done
}
probe_teardown() {
  local key n
  for n in $NODE_LIST; do ip -n "${P}$n" addr del "$SVC_IP/32" dev lo 2>/dev/null || true; done
  for key in "${!SAVED_SYSCTL[@]}"; do
    ip netns exec "${P}${key%%/*}" sysctl -qw "${key#*/}=${SAVED_SYSCTL[$key]}" || true
  done
}

# owner: the node whose MAC answers ARP for SVC_IP ("none" / "several:<macs>").
owner() {
  local macs
  macs=$(ip netns exec "${P}client" arping -c 2 -w 2 -I eth0 "$SVC_IP" 2>/dev/null \
    | sed -n 's/.*\[\([0-9A-Fa-f:]*\)\].*/\1/p' | tr 'A-F' 'a-f' | sort -u)
  case $(echo "$macs" | grep -c .) in
    0) echo none ;;
    1) mac_node "$macs" ;;
    *) echo "several:$(echo $macs | tr ' ' ',')" ;;
  esac
}
# Waits until the same single owner is seen for STABLE_S seconds; prints it.
stable_owner() {
  local deadline=$((SECONDS + 120)) last="" since=$SECONDS o
  while [ $SECONDS -lt $deadline ]; do
    o=$(owner)
    if [ "$o" != "$last" ]; then last=$o; since=$SECONDS; fi
    if [[ $o == node* ]] && [ $((SECONDS - since)) -ge "$STABLE_S" ]; then echo "$o"; return 0; fi
    sleep 0.5
  done
  echo "no stable owner for $SVC_IP within 120 s (last: $last)" >&2; return 1
}
restore_all() {
  local n
  for n in $NODE_LIST; do ip -n "${P}sw" link set "$n" up 2>/dev/null || true; done
  for n in $NODE_LIST; do
    speaker_alive "$n" || { FERROLB_LAB_PREFIX=$P $XTASK lab up --no-build --nodes "$NODES" > "$OUT/restore.log" 2>&1 || { cat "$OUT/restore.log" >&2; return 1; }; break; }
  done
  probe_setup
}
cleanup() { restore_all || true; probe_teardown; }
trap cleanup EXIT

{ describe_machine; echo "bench: ferrolb speaker $("${FERROLB_SPEAKER_BIN:-$REPO/target/debug/ferrolb-speaker}" --version 2>&1 | head -1), SVC_IP $SVC_IP, lab $P ($NODES nodes), trials $TRIALS, faults $FAULTS, timeout ${TIMEOUT}s"; } | tee "$OUT/machine.txt"
ensure_memberlist_secret
probe_setup
o=$(stable_owner)
ip netns exec "${P}client" ping -c 3 -i 0.2 -W 1 "$SVC_IP" > "$OUT/ping-check.txt" 2>&1 || {
  echo "ping to $SVC_IP gets no echo reply from the owner $o even with the address on lo:" >&2; cat "$OUT/ping-check.txt" >&2; exit 1; }
echo "probe check: owner $o answers ping: $(grep -o '[0-9]* received' "$OUT/ping-check.txt")"

for fault in $FAULTS; do
  timeouts=0
  for i in $(seq "$TRIALS"); do
    if [ "$timeouts" -ge 2 ]; then
      echo "{\"impl\": \"ferrolb\", \"setting\": \"speaker\", \"fault\": \"$fault\", \"trial\": \"$i\", \"failover_ms\": null, \"skipped\": \"2 timeouts in a row\"}" | tee -a "$OUT/trials.jsonl"
      continue
    fi
    old=$(stable_owner); old_mac=$(node_mac "$old")
    base="$OUT/ferrolb-$fault-$i"
    capture_start "$base" "$SVC_IP" $((TIMEOUT + 3))
    sleep 1
    random_phase 1
    t0=$(now)
    case $fault in
      linkdown) ip -n "${P}sw" link set "$old" down ;;
      kill) kill -KILL "$(speaker_pid "$old")" ;;
      term) kill -TERM "$(speaker_pid "$old")" ;;
    esac
    # Stop early once a reply from another MAC is on the wire (or at TIMEOUT).
    deadline=$(python3 -c "print($t0 + $TIMEOUT)")
    timed_out=true
    while python3 -c "import time,sys; sys.exit(time.time() > $deadline)"; do
      if awk -v t0="$t0" -v old="$old_mac" '$1 > t0 && $2 != old && /ICMP echo reply/ {f=1; exit} END {exit !f}' "$base.tcpdump"; then
        timed_out=false; break
      fi
      sleep 0.1
    done
    sleep 0.3; kill -INT "$PING_PID" 2>/dev/null || true
    capture_stop
    $STATS trial "$base.tcpdump" "$t0" "$SVC_IP" any-but-old "$old_mac" impl=ferrolb setting=speaker \
      "fault=$fault" "trial=$i" "old_owner=$old" "timeout=$timed_out" "load1=$(cut -d' ' -f1 /proc/loadavg)" \
      | tee -a "$OUT/trials.jsonl"
    if $timed_out; then timeouts=$((timeouts + 1)); else timeouts=0; fi
    restore_all
  done
done
$STATS summary "$OUT/trials.jsonl" | tee "$OUT/summary.tsv"
echo "results: $OUT"
