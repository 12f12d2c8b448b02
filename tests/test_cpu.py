"""CPU feature detection: what the numbers and speeds depend on."""

from landing.models.cpu import cpu_flags, native_bf16


def test_native_bf16_needs_avx512_bf16_or_amx():
    assert not native_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert native_bf16(frozenset({"avx2", "avx512_bf16"})) and native_bf16(frozenset({"amx_bf16"}))


def test_this_cpu_is_read_from_proc_cpuinfo():
    flags = cpu_flags()
    assert isinstance(flags, frozenset) and native_bf16() == native_bf16(flags)
