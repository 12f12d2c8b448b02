"""Round-robin schedule and median-of-medians, with a fake timer that records the call order."""

from landing.infra.latency.interleave import interleaved_p50s, round_robin_schedule, summarise_rounds


def test_schedule_is_round_robin_with_a_rotating_start():
    assert round_robin_schedule(["a", "b", "c"], 4) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
                                                         ["a", "b", "c"]]  # fmt: skip


def test_every_round_times_every_variant_and_the_median_is_of_round_p50s():
    calls = []
    fake_p50s = {"fp32": iter([4.0, 9.0, 5.0]), "int8": iter([1.0, 1.2, 0.9])}  # one outlier round for fp32

    def timer(name):
        def measure():
            calls.append(name)
            return {16: next(fake_p50s[name])}

        return measure

    per_round = interleaved_p50s({"fp32": timer("fp32"), "int8": timer("int8")}, rounds=3)
    assert calls == ["fp32", "int8", "int8", "fp32", "fp32", "int8"]
    assert per_round == {"fp32": {"16": [4.0, 9.0, 5.0]}, "int8": {"16": [1.0, 1.2, 0.9]}}
    fp32 = summarise_rounds(per_round["fp32"])["16"]
    assert (fp32["median_ms"], fp32["min_ms"], fp32["max_ms"], fp32["rounds"]) == (5.0, 4.0, 9.0, 3)
    assert summarise_rounds(per_round["int8"])["16"]["median_ms"] == 1.0
