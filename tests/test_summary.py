"""The report's summary: provenance records gathered into one file and a software section."""

import json
import time

import pandas as pd

from warpbio.provenance import build_record, write_record
from warpbio.summary import gather, gathered_provenance, load_records, render_html


def records(tmp_path, numpy_versions):
    paths = []
    for index, version in enumerate(numpy_versions):
        output = tmp_path / f"out{index}.tsv"
        output.write_text(str(index))
        record = build_record(rule=f"rule{index}", outputs=[str(output)], started=time.time())
        record["packages"]["numpy"] = version
        path = tmp_path / f"rule{index}.provenance.json"
        write_record(path, record)
        paths.append(str(path))
    return paths


def test_gathered_provenance_keeps_every_record_and_the_stack(tmp_path):
    paths = records(tmp_path, ["2.4.6", "2.4.6"])
    gathered = gathered_provenance(load_records(paths))
    assert sorted(gathered["records"]) == sorted(paths)
    assert gathered["software"]["packages"]["numpy"] == ["2.4.6"]
    assert gathered["software"]["backends"] == ["cpu"]
    json.dumps(gathered)  # serializable as written by the summary rule


def test_a_package_at_two_versions_is_flagged(tmp_path):
    paths = records(tmp_path, ["2.4.6", "2.3.0"])
    loaded = load_records(paths)
    assert gathered_provenance(loaded)["software"]["packages"]["numpy"] == ["2.3.0", "2.4.6"]
    page = render_html(gather(paths, {}), loaded)
    row = next(line for line in page.splitlines() if line.startswith("<tr><td>numpy<"))
    assert "several versions in one run" in row
    assert page.count("<details>") == 2
    assert isinstance(gather(paths, {}), pd.DataFrame)
