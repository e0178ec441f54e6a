"""Load TASO's generated rules, verify them numerically, and report.

    python -m experiments.rules_report [--source pb|text] [--verbose] [--graph GRAPH]

Prints how many rules were loaded and how many verify, and for each rule that does not,
why. ``--verbose`` prints every rule with its verdict; ``--graph`` also counts the
matches of the verified rules on a graph (a built-in name or a file, see
``experiments.graph_info``). The last stdout line is JSON:
``{"loaded": N, "verified": M, "failed": {name: reason}}`` (plus ``"matches"`` with --graph).
"""
from __future__ import annotations

import argparse
import json
import time

from experiments._cli import run_main
from systems_envs.rewrite.taso_rules import load_taso_rules, verification_report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.rules_report", description=__doc__.splitlines()[0])
    p.add_argument("--source", default="pb", choices=["pb", "text"], help="rule file to load")
    p.add_argument("--verbose", action="store_true", help="print every rule and its verdict")
    p.add_argument("--graph", help="also count matches of the verified rules on this graph")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    rules = load_taso_rules(verified_only=False, source=args.source)
    report = verification_report(args.source)
    secs = time.perf_counter() - t0
    failed = {name: res.reason for name, res in report.items() if not res.ok}
    print(f"loaded {len(rules)} rules from {args.source} "
          f"({sum(len(r.spec.mapped) == 2 for r in rules)} with two outputs)")
    print(f"verified {len(rules) - len(failed)} / {len(rules)} in {secs:.2f} s "
          f"(float64 reference executor, worst relative error {max(r.max_err for r in report.values()):.2g})")
    for r in rules:
        res = report[r.name]
        if args.verbose or not res.ok or "with ?input_" in res.reason:
            print(f"  {r.name} {'OK  ' if res.ok else 'FAIL'} {res.reason}")
            if args.verbose or not res.ok:
                print(f"      {r.spec.to_text()}")
    summary = {"loaded": len(rules), "verified": len(rules) - len(failed), "failed": failed}
    if args.graph:
        from systems_envs.graph.load import load_graph

        graph = load_graph(args.graph)
        verified = [r for r in rules if report[r.name].ok]
        t0 = time.perf_counter()
        counts = {r.name: sum(len(r.match_at(graph, nid)) for nid in graph.nodes) for r in verified}
        secs = time.perf_counter() - t0
        counts = {k: v for k, v in counts.items() if v}
        print(f"{graph.summary()}")
        print(f"{sum(counts.values())} matches of {len(counts)} rules; matching every rule at every node took {secs:.2f} s")
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {name}: {n}")
        summary["matches"] = counts
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    run_main(main)
