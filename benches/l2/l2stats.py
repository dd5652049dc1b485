#!/usr/bin/env python3
"""Analysis for the layer2 benchmarks in benches/l2 (reads tcpdump -tt -e text, writes JSON lines).

  l2stats.py trial <tcpdump.txt> <t0> <vip> <new_mac> <old_mac> [key=value ...]
      One failover trial: t0 -> first ICMP echo reply from <new_mac> (the probe), first ARP from
      <new_mac> for <vip> after t0 (gratuitous or reply), longest gap between echo replies around t0,
      echo replies from <old_mac> after t0. <new_mac> may be "any-but-old" (FerroLB: the new owner is
      whichever node the client moves to). Prints one JSON object; extra key=value pairs are copied.
  l2stats.py summary <trials.jsonl> [group keys...]
      median / p90 / max of failover_ms per group (default: impl, setting, fault) as TSV.
  l2stats.py arpwire <tcpdump.txt> <client_ip> <ip> [<ip> ...]
      request -> reply time on the client's wire for each target IP (JSON per IP, microseconds).
  l2stats.py arping <label> <arping-output.txt>
      arping-reported reply times (JSON, milliseconds).

Percentiles are nearest-rank: p90 of 10 trials is the 9th smallest.
"""
import json
import math
import re
import statistics
import sys

LINE = re.compile(r"^([\d.]+) ([0-9a-f:]{17}) > ([0-9a-f:]{17}),")


def nearest_rank(sorted_values, pct):
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def dist(values, digits=1):
    v = sorted(values)
    if not v:
        return {"n": 0}
    r = lambda x: round(x, digits)
    return {
        "n": len(v),
        "min": r(v[0]),
        "p50": r(statistics.median(v)),
        "mean": r(statistics.mean(v)),
        "p90": r(nearest_rank(v, 90)),
        "p99": r(nearest_rank(v, 99)),
        "max": r(v[-1]),
    }


def trial(path, t0, vip, new_mac, old_mac, extra):
    t0 = float(t0)
    new_mac, old_mac = new_mac.lower(), old_mac.lower()
    replies, arp_new = [], None
    vip_re = re.escape(vip)
    arp_for_vip = re.compile(
        rf"who-has {vip_re} .*tell {vip_re},|Reply {vip_re} is-at")
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        ts, src = float(m.group(1)), m.group(2)
        if "ICMP echo reply" in line:
            replies.append((ts, src))
        elif arp_for_vip.search(line) and ts > t0 and arp_new is None:
            if src == new_mac or (new_mac == "any-but-old" and src != old_mac):
                arp_new = (ts, src)

    def is_new(src):
        return src == new_mac or (new_mac == "any-but-old" and src != old_mac)

    first_new = next(((ts, s) for ts, s in replies if ts > t0 and is_new(s)), None)
    before = [ts for ts, _ in replies if ts <= t0]
    after = [ts for ts, _ in replies if ts > t0]
    gap = None
    if before:
        chain = [before[-1]] + after
        gap = max((b - a for a, b in zip(chain, chain[1:])), default=None)
    ms = lambda x: None if x is None else round(x * 1000.0, 1)
    out = dict(extra)
    out.update({
        "t0": t0,
        "failover_ms": ms(first_new[0] - t0) if first_new else None,
        "new_mac": first_new[1] if first_new else None,
        "first_arp_from_new_ms": ms(arp_new[0] - t0) if arp_new else None,
        "longest_reply_gap_ms": ms(gap),
        "replies_before_t0": len(before),
        "replies_from_old_after_t0": sum(1 for ts, s in replies if ts > t0 and s == old_mac),
    })
    print(json.dumps(out))


def summary(path, keys):
    keys = keys or ["impl", "setting", "fault"]
    groups = {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        groups.setdefault(tuple(str(rec.get(k, "")) for k in keys), []).append(rec)
    print("\t".join(keys + ["trials", "measured", "median_ms", "p90_ms", "max_ms", "min_ms", "values_ms"]))
    for group, recs in groups.items():
        values = sorted(r["failover_ms"] for r in recs if r.get("failover_ms") is not None)
        d = dist(values, 0)
        cells = [str(d.get(k, "")) if d["n"] else "-" for k in ("p50", "p90", "max", "min")]
        print("\t".join(list(group) + [str(len(recs)), str(len(values))] + cells
                        + [",".join(f"{v:.0f}" for v in values)]))


def arpwire(path, client_ip, ips):
    pending, deltas, macs, unanswered = {}, {ip: [] for ip in ips}, {ip: {} for ip in ips}, {ip: 0 for ip in ips}
    req = re.compile(rf"Request who-has (\S+) (?:\(\S+\) )?tell {re.escape(client_ip)},")
    rep = re.compile(r"Reply (\S+) is-at ([0-9a-f:]{17})")
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        ts = float(m.group(1))
        q = req.search(line)
        if q and q.group(1) in deltas:
            if q.group(1) in pending:
                unanswered[q.group(1)] += 1
            pending[q.group(1)] = ts
            continue
        a = rep.search(line)
        if a and a.group(1) in deltas:
            ip = a.group(1)
            macs[ip][a.group(2)] = macs[ip].get(a.group(2), 0) + 1
            if ip in pending:
                deltas[ip].append((ts - pending.pop(ip)) * 1e6)
    for ip in ips:
        out = {"ip": ip, "unit": "us", "reply_macs": macs[ip],
               "requests_without_reply": unanswered[ip] + (1 if ip in pending else 0)}
        out.update(dist(deltas[ip], 0))
        print(json.dumps(out))


def arping(label, path):
    v = [float(m.group(1)) for line in open(path, errors="replace")
         for m in [re.search(r"reply from .*\s([\d.]+)\s?ms", line)] if m]
    out = {"label": label, "unit": "ms"}
    out.update(dist(v, 3))
    print(json.dumps(out))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "trial" and len(argv) >= 7:
        extra = dict(a.split("=", 1) for a in argv[7:])
        trial(argv[2], argv[3], argv[4], argv[5], argv[6], extra)
    elif cmd == "summary" and len(argv) >= 3:
        summary(argv[2], argv[3:])
    elif cmd == "arpwire" and len(argv) >= 5:
        arpwire(argv[2], argv[3], argv[4:])
    elif cmd == "arping" and len(argv) == 4:
        arping(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
