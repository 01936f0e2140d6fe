import pytest

from warpbio.io import atomic_write, remove_outputs


def test_atomic_write_publishes_on_success(tmp_path):
    target = tmp_path / "sub" / "table.tsv.gz"
    with atomic_write(target) as tmp:
        assert tmp.name.endswith(".tsv.gz") and tmp.parent == target.parent
        tmp.write_text("x")
        assert not target.exists()
    assert target.read_text() == "x"
    assert [p.name for p in target.parent.iterdir()] == ["table.tsv.gz"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.tsv"]


def test_atomic_directory(tmp_path):
    target = tmp_path / "store.zarr"
    with atomic_write(target, directory=True) as tmp:
        (tmp / "chunk").write_text("1")
    assert (target / "chunk").read_text() == "1"
    with atomic_write(target, directory=True) as tmp:
        (tmp / "other").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["other"]


def test_writer_that_writes_nothing_fails(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "x.txt"):
        pass


def test_remove_outputs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("")
    (tmp_path / "f").write_text("")
    remove_outputs([tmp_path / "d", tmp_path / "f", tmp_path / "absent"])
    assert list(tmp_path.iterdir()) == []
