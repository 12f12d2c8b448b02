"""Meta-KD benchmark (issue #14) through the real ``metakd`` flow: the Amazon multi-domain reviews, MiniLM-L6
(meta-)teachers, the 2-layer student, all four domains as targets, 3 seeds. Every choice on the validation
split; each domain's dev.tsv rows are only reported. Writes ``benchmarks/results/metakd_blitzer.{md,json}``.

    python benchmarks/metakd_blitzer.py [--seeds 1 2 3] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/blitzer/metakd.yaml"
RESULTS = ROOT / "benchmarks/results"


def render(runs: list[dict], provenance_md: str) -> str:
    from landing.flows.metakd import ROWS

    domains = list(runs[0]["domains"])
    lines = ["# Meta-KD on the Amazon multi-domain reviews (accuracy %, mean ± sd over seeds; eval = dev.tsv)", "",
             provenance_md, "", "| model | " + " | ".join(domains) + " | mean |",
             "| --- |" + " ---: |" * (len(domains) + 1)]  # fmt: skip
    for row in ROWS:
        cells = []
        for domain in [*domains, None]:
            values = [100 * (r["mean"][row] if domain is None else r["domains"][domain][row]) for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {sd:.2f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".landing-benchmark-metakd")
    args = parser.parse_args()
    os.environ.setdefault("LANDING_STATE_DIR", str(args.state_dir))
    from landing.config import load_config
    from landing.flows.metakd import metakd
    from landing.infra.provenance import provenance, provenance_markdown
    from landing.infra.settings import prepare_runtime_environment

    prepare_runtime_environment()
    runs = []
    for seed in args.seeds:
        config = load_config(CONFIG, [f"seed={seed}", *args.overrides])
        runs.append(metakd(config=config, config_dir=str(CONFIG.parent), output_dir=str(args.state_dir / f"seed-{seed}")))
    info = provenance(threads=1) | {"overrides": args.overrides, "seeds": args.seeds}
    table = render(runs, provenance_markdown(info))
    (RESULTS / "metakd_blitzer.md").write_text(table)
    (RESULTS / "metakd_blitzer.json").write_text(json.dumps({"provenance": info, "runs": runs}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
