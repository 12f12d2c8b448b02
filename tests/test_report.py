import csv
import io

from landing.models.report import VariantResult, plot_accuracy_vs_latency, render_csv, render_markdown, report_rows


def _variants():
    return [
        VariantResult("student_fp32", "fp32", 0.90, 60_000_000, {"16": 4.0, "32": 6.0}, 300 * 2**20),
        VariantResult("pruned_int8", "int8", 0.89, 6_000_000, {"16": 1.0, "32": 2.0}, 100 * 2**20,
                      latency_ms_range={"16": (0.9, 1.25), "32": (1.8, 2.1)}),
    ]


def test_rows_give_deltas_and_speedups_against_the_reference():
    rows = report_rows(_variants(), "student_fp32")
    assert rows[1]["accuracy"] == "89.00 (-1.00)"
    assert rows[1]["p50 ms @16 [round range] (speed-up)"] == "1.00 [0.90–1.25] (4.00×)"
    assert rows[1]["p50 ms @32 [round range] (speed-up)"] == "2.00 [1.80–2.10] (3.00×)"
    assert rows[0]["p50 ms @16 [round range] (speed-up)"] == "4.00 (1.00×)"  # no rounds, no range
    assert rows[1]["size MB (Δ)"] == "6.0 (-90%)" and rows[1]["peak RSS MB"] == "100"
    assert rows[0]["accuracy"] == "90.00 (+0.00)"


def test_markdown_csv_and_plot(tmp_path):
    variants = _variants()
    md = render_markdown(report_rows(variants, "student_fp32"), "report")
    assert md.count("\n| ") == 4  # header, separator, 2 rows
    parsed = list(csv.DictReader(io.StringIO(render_csv(variants))))
    assert parsed[1]["latency_ms_p50_32"] == "2.0" and parsed[0]["size_bytes"] == "60000000"
    assert parsed[1]["latency_ms_p50_16_max"] == "1.25" and parsed[0]["latency_ms_p50_16_min"] == ""
    png = plot_accuracy_vs_latency(variants, "16", tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
