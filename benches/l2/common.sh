# Shared by the layer2 benchmark scripts in benches/l2 (sourced, not run).
# Everything happens inside the namespaces of the lab with prefix $P; only 192.0.2.0/24 is used.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
L2DIR="$REPO/benches/l2"
P=${FERROLB_LAB_PREFIX:-fbk-}
# Child tools (cargo xtask) must act on the same lab, never on the default prefix.
export FERROLB_LAB_PREFIX=$P
TRIALS=${TRIALS:-10}
STATS="python3 $L2DIR/l2stats.py"
RUN_DIR="$REPO/target/lab/$P"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
# Results (JSON lines + TSV summary + raw captures); override with OUT=.
OUT=${OUT:-$REPO/target/l2-bench/$STAMP}

node_mac() { printf '02:00:00:00:00:%02x' $((10 + ${1#node})); }
mac_node() { local last=${1##*:}; echo "node$((16#$last - 10))"; }

need_lab() {
  local n
  for n in "$@"; do
    ip netns list | grep -q "^${P}$n\b" || {
      echo "lab ${P%-} is not up (no namespace ${P}$n): FERROLB_LAB_PREFIX=$P cargo xtask lab up ..." >&2
      exit 2
    }
  done
}

# Records what the numbers depend on.
describe_machine() {
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/\s\+/ /g')"
  echo "load average (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

# capture_start <dir/base> <vip> <ping-seconds>: tcpdump on client's eth0 (echo replies + ARP,
# with MACs) and a 5 ms ping to the VIP. Sets TCPDUMP_PID, PING_PID.
capture_start() {
  local base=$1 vip=$2 secs=$3
  ip netns exec "${P}client" tcpdump -tt -e -l -nni eth0 "arp or (icmp and host $vip)" \
    > "$base.tcpdump" 2> "$base.tcpdump.err" &
  TCPDUMP_PID=$!
  sleep 0.5
  ip netns exec "${P}client" ping -q -i 0.005 -w "$secs" "$vip" > "$base.ping" 2>&1 &
  PING_PID=$!
}

capture_stop() {
  wait "$PING_PID" 2>/dev/null || true
  sleep 0.2
  kill "$TCPDUMP_PID" 2>/dev/null || true
  wait "$TCPDUMP_PID" 2>/dev/null || true
}

# Random phase relative to the announcer's timers: sleep U(0, $1) seconds.
random_phase() { sleep "$(python3 -c "import random; print(round(random.uniform(0, float('$1')), 3))")"; }

now() { date +%s.%N; }
