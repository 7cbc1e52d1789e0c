"""Summarise a per-SASS Nsight Compute export (``ncu -i R --page source --csv --print-source sass``): warp-state
samples by stall reason, by opcode, and the instructions with excessive global sectors or shared wavefronts.
Usage: python benchmarks/results/ncu/s24_stalls_summary.py FILE.csv[.gz] [...]"""
import collections
import csv
import gzip
import re
import sys

REASONS = ("selected", "wait", "short_sb", "long_sb", "not_selected", "math", "dispatch", "mio", "barrier",
           "branch_resolving", "lg", "no_inst", "membar", "drain", "imc", "misc", "sleep", "tex")


def rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = list(csv.reader(f))
    start = next(i for i, r in enumerate(data) if r and r[0] == "Address")
    return data[start], data[start + 1:]


def num(x):
    try:
        return int(x.replace(",", ""))
    except ValueError:
        return 0


for path in sys.argv[1:]:
    head, body = rows(path)
    ix = {h: i for i, h in enumerate(head)}
    by_reason, by_op, total = collections.Counter(), collections.defaultdict(collections.Counter), 0
    excess = []
    for r in body:
        src = r[ix["Source"]].strip()
        op = re.sub(r"^@!?U?P\w+\s+", "", src).split()[0].split(".")[0] if src else "?"
        n = num(r[ix["Warp Stall Sampling (All Samples)"]])
        total += n
        by_op[op]["samples"] += n
        by_op[op]["executed"] += num(r[ix["Instructions Executed"]])
        for reason in REASONS:
            col = f"stall_{reason}"
            if col in ix:
                v = num(r[ix[col]])
                by_reason[reason] += v
                by_op[op][reason] += v
        g, s = (num(r[ix[col]]) if col in ix else 0
                for col in ("L2 Theoretical Sectors Global Excessive", "L1 Wavefronts Shared Excessive"))
        if g or s:
            excess.append((g, s, src))
    print(f"== {path}: {total} samples")
    print("by reason: " + ", ".join(f"{k} {v} ({100 * v / total:.1f} %)" for k, v in by_reason.most_common() if v))
    print("by opcode (samples, share; top reasons):")
    for op, c in sorted(by_op.items(), key=lambda kv: -kv[1]["samples"])[:16]:
        top = ", ".join(f"{k} {c[k]}" for k in sorted(REASONS, key=lambda k: -c[k])[:3] if c[k])
        print(f"  {op:8s} {c['samples']:6d} ({100 * c['samples'] / total:4.1f} %), executed {c['executed']:>10,}: {top}")
    print("excessive global sectors / shared wavefronts (by instruction):")
    for g, s, src in sorted(excess, reverse=True)[:12]:
        print(f"  {g:>9,} {s:>9,}  {src}")
