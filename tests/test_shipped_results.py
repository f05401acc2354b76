"""The README's Results tables are the shipped records' numbers (made by `harness report`)."""
import glob
import os

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("folder", sorted(glob.glob(os.path.join(ROOT, "docs", "results", "*"))))
def test_readme_table_is_made_from_shipped_records(folder):
    from harness.report import load_records, suite_table

    rows = [ln for ln in suite_table(load_records([folder]), "md").splitlines() if ln.startswith("| ")]
    assert len(rows) >= 3  # header + at least two models
    readme = open(os.path.join(ROOT, "README.md")).read()
    for row in rows:
        assert row in readme, row
    shipped = open(os.path.join(folder, "table.md")).read()
    assert all(row in shipped for row in rows)
