"""The compression report: the product brief's table as markdown, CSV and an accuracy-vs-latency plot."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class VariantResult:
    name: str
    precision: str
    accuracy: float  # on the eval split (reported)
    size_bytes: int
    latency_ms_p50: dict[str, float]  # by sequence length, model only
    peak_rss_bytes: int | None = None
    latency_ms_p50_end_to_end: dict[str, float | None] = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    uri: str | None = None
    runtime: str = "onnxruntime"
    latency_ms_range: dict[str, tuple[float, float]] = field(default_factory=dict)  # min–max of per-round p50s
    validation_accuracy: float | None = None  # on the validation split (for selection), when there is one
    macro_f1: float | None = None  # on the eval split

    def as_summary(self) -> dict:
        return asdict(self)


def _ratio(value: float, reference: float) -> str:
    return f"{reference / value:.2f}×" if value else "-"


def report_rows(variants: list[VariantResult], reference: str) -> list[dict[str, str]]:
    """One row per variant; deltas and speed-ups relative to the ``reference`` variant, same run."""
    ref = next(v for v in variants if v.name == reference)
    rows = []
    for v in variants:
        row = {
            "variant": v.name,
            "runtime": v.runtime,
            "precision": v.precision,
            "accuracy": f"{100 * v.accuracy:.2f} ({100 * (v.accuracy - ref.accuracy):+.2f})",
        }
        for seq, ms in sorted(v.latency_ms_p50.items(), key=lambda kv: int(kv[0])):
            spread = f" [{v.latency_ms_range[seq][0]:.2f}–{v.latency_ms_range[seq][1]:.2f}]" if seq in v.latency_ms_range else ""
            row[f"p50 ms @{seq} [round range] (speed-up)"] = f"{ms:.2f}{spread} ({_ratio(ms, ref.latency_ms_p50[seq])})"
        row["peak RSS MB"] = "-" if v.peak_rss_bytes is None else f"{v.peak_rss_bytes / 2**20:.0f}"
        row["size MB (Δ)"] = f"{v.size_bytes / 1e6:.1f} ({100 * (v.size_bytes / ref.size_bytes - 1):+.0f}%)"
        rows.append(row)
    return rows


def render_markdown(rows: list[dict[str, str]], title: str) -> str:
    header = list(rows[0])
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_csv(variants: list[VariantResult]) -> str:
    out = io.StringIO()
    seqs = sorted({s for v in variants for s in v.latency_ms_p50}, key=int)
    writer = csv.writer(out)
    writer.writerow(["variant", "runtime", "precision", "accuracy", "size_bytes", "peak_rss_bytes",
                     *[f"latency_ms_p50_{s}" for s in seqs], *[f"latency_ms_p50_{s}_{e}" for s in seqs for e in ("min", "max")]])  # fmt: skip
    for v in variants:
        writer.writerow([v.name, v.runtime, v.precision, v.accuracy, v.size_bytes, v.peak_rss_bytes,
                         *[v.latency_ms_p50.get(s) for s in seqs],
                         *[v.latency_ms_range.get(s, (None, None))[i] for s in seqs for i in (0, 1)]])  # fmt: skip
    return out.getvalue()


def plot_accuracy_vs_latency(variants: list[VariantResult], seq_len: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    # Variants sit close together (INT8 variants differ by a few µs), so names go in a legend, not on the points.
    fig, ax = plt.subplots(figsize=(8, 4.5))
    markers = "osD^vP*Xh<>"
    for i, v in enumerate(variants):
        if seq_len in v.latency_ms_range:  # error bar: the range of per-round p50s
            lo, hi = v.latency_ms_range[seq_len]
            ax.errorbar(v.latency_ms_p50[seq_len], 100 * v.accuracy, xerr=[[v.latency_ms_p50[seq_len] - lo],
                        [hi - v.latency_ms_p50[seq_len]]], fmt="none", ecolor="grey", alpha=0.6)  # fmt: skip
        ax.scatter(v.latency_ms_p50[seq_len], 100 * v.accuracy, s=max(v.size_bytes / 2e5, 15), alpha=0.6,
                   marker=markers[i % len(markers)], label=f"{v.name} ({v.size_bytes / 1e6:.1f} MB)")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"median of per-round latency p50, batch 1, seq {seq_len} (ms, log scale)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("accuracy vs latency (marker area ∝ model size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=0.5, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
