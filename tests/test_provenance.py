import hashlib
import json
import time

from warpbio.provenance import build_record, describe_path, write_record


def test_record_has_checksums_and_environment(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"abc" * 1000)
    result = tmp_path / "out.txt"
    result.write_bytes(b"result")
    record = build_record(
        rule="demo",
        outputs=[str(result)],
        inputs=[str(source)],
        params={"k": 3, "nested": {"a": [1, 2]}},
        seed=7,
        started=time.time() - 1.0,
    )
    assert record["seed"] == 7 and record["params"]["nested"] == {"a": [1, 2]}
    assert record["inputs"][0]["bytes"] == 3000
    expected = hashlib.sha256(b"abc" * 1000).hexdigest()
    assert record["inputs"][0]["checksum"] == f"sha256:{expected}"
    assert record["wall_seconds"] >= 1.0
    assert record["peak_host_memory_bytes"] > 0
    assert "numpy" in record["packages"] and record["python"]
    assert record["gpu"]["ids"] == []
    path = tmp_path / "prov.json"
    write_record(path, record)
    assert json.loads(path.read_text())["rule"] == "demo"


def test_directory_checksum_changes_with_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    before = describe_path(tmp_path / "d")
    (tmp_path / "d" / "a").write_text("2")
    after = describe_path(tmp_path / "d")
    assert before["files"] == 1 and before["checksum"] != after["checksum"]
    assert describe_path(tmp_path / "missing") == {
        "path": str(tmp_path / "missing"),
        "exists": False,
    }


def test_cpu_job_records_no_gpu_even_with_cupy_imported(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    record = build_record(rule="cpu", outputs=[], started=time.time())
    assert record["gpu"] == {"ids": []}
