import pytest

from ringbook.engine import system


def fake_caches(root, core, caches):
    """A sysfs ``cpu<core>/cache`` tree of ``(level, type, size)`` entries."""
    for number, (level, kind, size) in enumerate(caches):
        index = root / f"cpu{core}" / "cache" / f"index{number}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")


@pytest.mark.parametrize("size, expected", [("1024K", 1 << 20), ("2M", 2 << 20), ("524288", 1 << 19)])
def test_l2_cache_size_is_read_from_sysfs(tmp_path, size, expected):
    fake_caches(tmp_path, 3, [(1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", size),
                              (3, "Unified", "32768K")])
    assert system.l2_cache_bytes(3, root=tmp_path) == expected


@pytest.mark.parametrize("caches", [[], [(1, "Data", "32K"), (3, "Unified", "32768K")],
                                    [(2, "Unified", "lots")], [(2, "Instruction", "512K")]])
def test_l2_cache_size_is_none_when_the_kernel_does_not_say(tmp_path, caches):
    fake_caches(tmp_path, 0, caches)
    assert system.l2_cache_bytes(0, root=tmp_path) is None


def test_l2_cache_size_of_this_machine_is_plausible_or_unknown():
    size = system.l2_cache_bytes()
    assert size is None or 64 << 10 <= size <= 64 << 20
