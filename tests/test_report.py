import csv
import io

from models.report import VariantResult, plot_accuracy_vs_latency, render_csv, render_markdown, report_rows


def _variants():
    return [
        VariantResult("student_fp32", "fp32", 0.90, 60_000_000, {"16": 4.0, "32": 6.0}, 300 * 2**20),
        VariantResult("pruned_int8", "int8", 0.89, 6_000_000, {"16": 1.0, "32": 2.0}, 100 * 2**20),
    ]


def test_rows_give_deltas_and_speedups_against_the_reference():
    rows = report_rows(_variants(), "student_fp32")
    assert rows[1]["accuracy"] == "89.00 (-1.00)"
    assert rows[1]["p50 ms @16 (speed-up)"] == "1.00 (4.00×)" and rows[1]["p50 ms @32 (speed-up)"] == "2.00 (3.00×)"
    assert rows[1]["size MB (Δ)"] == "6.0 (-90%)" and rows[1]["peak RSS MB"] == "100"
    assert rows[0]["accuracy"] == "90.00 (+0.00)"


def test_markdown_csv_and_plot(tmp_path):
    variants = _variants()
    md = render_markdown(report_rows(variants, "student_fp32"), "report")
    assert md.count("\n| ") == 4  # header, separator, 2 rows
    parsed = list(csv.DictReader(io.StringIO(render_csv(variants))))
    assert parsed[1]["latency_ms_p50_32"] == "2.0" and parsed[0]["size_bytes"] == "60000000"
    png = plot_accuracy_vs_latency(variants, "16", tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
