#!/usr/bin/env bash
# ARP reply latency: FerroLB's speaker (user-space AF_PACKET responder) against the kernel's own
# answer, in the same run, probes interleaved.
#
#   FERROLB_LAB_PREFIX=fbk- cargo xtask lab up --nodes 3 --demo
#   sudo PROBES=300 benches/l2/arp-latency.sh
#
# FerroLB: the demo Service IP (SVC_IP=, default 192.0.2.100), answered by the owning node's
# speaker; no node kernel owns it. Kernel: KERNEL_IP (default 192.0.2.31/32) added to node2's eth0
# for the run (KERNEL_NODE=). The client sends PROBES `arping -c 1 -w 1` to each, alternating.
# Measured twice: on the wire (tcpdump -tt on the client's eth0, request -> reply, microseconds)
# and as arping reports it (milliseconds; includes arping's own user-space overhead on both ends).
set -euo pipefail
source "$(dirname "$0")/common.sh"
PROBES=${PROBES:-300}
SVC_IP=${SVC_IP:-192.0.2.100}
KERNEL_IP=${KERNEL_IP:-192.0.2.31}
KERNEL_NODE=${KERNEL_NODE:-node2}
need_lab "$KERNEL_NODE" client sw
mkdir -p "$OUT"
ip -n "${P}$KERNEL_NODE" addr replace "$KERNEL_IP/32" dev eth0
cleanup() {
  [ -n "${TCPDUMP_PID:-}" ] && kill "$TCPDUMP_PID" 2>/dev/null
  ip -n "${P}$KERNEL_NODE" addr del "$KERNEL_IP/32" dev eth0 2>/dev/null || true
}
trap cleanup EXIT
{ describe_machine; echo "bench: ARP reply latency, ferrolb $SVC_IP vs kernel $KERNEL_IP on $KERNEL_NODE eth0, $PROBES probes each, lab $P"; } | tee "$OUT/machine.txt"
probe() { ip netns exec "${P}client" arping -c 1 -w 1 -I eth0 "$1" 2>&1 || true; }
o=$(probe "$SVC_IP")
echo "$o" | grep -q "reply from" || { echo "nobody answers ARP for $SVC_IP (is the speaker announcing it?):" >&2; echo "$o" >&2; exit 1; }
echo "ferrolb owner: $(echo "$o" | sed -n 's/.*\[\(.*\)\].*/\1/p' | head -1)"

ip netns exec "${P}client" tcpdump -tt -e -l -nni eth0 arp > "$OUT/arp.tcpdump" 2> "$OUT/arp.tcpdump.err" &
TCPDUMP_PID=$!
sleep 0.5
: > "$OUT/arping-ferrolb.txt"; : > "$OUT/arping-kernel.txt"
for _ in $(seq "$PROBES"); do
  probe "$SVC_IP" >> "$OUT/arping-ferrolb.txt"
  probe "$KERNEL_IP" >> "$OUT/arping-kernel.txt"
done
sleep 0.3
kill "$TCPDUMP_PID"; wait "$TCPDUMP_PID" 2>/dev/null || true; TCPDUMP_PID=
{
  $STATS arpwire "$OUT/arp.tcpdump" 192.0.2.200 "$SVC_IP" "$KERNEL_IP"
  $STATS arping ferrolb "$OUT/arping-ferrolb.txt"
  $STATS arping kernel "$OUT/arping-kernel.txt"
} | tee "$OUT/arp-latency.jsonl"
python3 - "$OUT/arp-latency.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
wire = [r for r in recs if "ip" in r]; arping = [r for r in recs if "label" in r]
for name, (f, k) in (("wire", wire), ("arping", arping)):
    if f.get("n") and k.get("n"):
        print(f"ratio ferrolb/kernel ({name}): p50 {f['p50']/k['p50']:.2f}, p90 {f['p90']/k['p90']:.2f}, p99 {f['p99']/k['p99']:.2f}")
PY
echo "results: $OUT"
