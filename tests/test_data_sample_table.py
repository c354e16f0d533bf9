"""The sample table on its own: no Lightning, the same facts the data module shows."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from lit_ssl.data import FactoryDataModule, write_synthetic_dataset
from lit_ssl.data.sample_table import SampleTable, TableOptions

DATA = Path(__file__).resolve().parents[1] / "lit_ssl" / "data"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    return write_synthetic_dataset(root, image_size=32, n_train=12, n_test_good=4, n_per_defect=3)


def _imports(module: str) -> set[str]:
    tree = ast.parse((DATA / f"{module}.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return names


def test_the_table_and_what_it_reads_import_neither_torch_nor_lightning() -> None:
    seen, todo = set(), ["sample_table"]
    while todo:
        module = todo.pop()
        seen.add(module)
        for name in _imports(module):
            assert name.split(".")[0] not in ("torch", "lightning"), (module, name)
            if name.startswith("lit_ssl.data.") and name.split(".")[2] not in seen:
                todo.append(name.split(".")[2])
    assert {"layouts", "scan", "table", "verify", "scaling"} <= seen


def test_built_table_matches_the_data_module(synthetic: Path) -> None:
    table = SampleTable.build(synthetic, TableOptions(seed=3), synthetic=True)
    dm = FactoryDataModule(root=str(synthetic), seed=3)
    dm.setup("fit")
    assert table.layout == dm.resolved_layout == "mvtec"
    assert [s.path for s in table.samples] == [s.path for s in dm.samples]
    assert table.class_names == dm.class_names and table.good_index == dm.good_index == 0
    np.testing.assert_array_equal(table.labelling.splits, dm.splits)
    assert table.split_sizes == dm.split_sizes and table.class_counts == dm.class_counts
    assert table.rows() == dm.sample_table() and table.skipped_files == dm.skipped_files == []


def test_binary_keeps_the_defect_types(synthetic: Path) -> None:
    table = SampleTable.build(synthetic, TableOptions(binary=True, resplit=True))
    labelling = table.labelling
    assert table.class_names == ["good", "defect"] and len(labelling.type_names) == 6
    np.testing.assert_array_equal(labelling.labels, (labelling.types != 0).astype(np.int64))
    assert sum(table.train_class_counts) == table.split_sizes["train"]


def test_the_data_module_reads_nothing_before_setup(synthetic: Path) -> None:
    dm = FactoryDataModule(root=str(synthetic))
    assert dm.samples == [] and dm.resolved_layout is None and dm.table is None
    assert getattr(dm, "class_names", None) is None  # an AttributeError: getattr defaults work
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.split_sizes


def test_classify_without_labels_names_the_stage(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "d", image_size=32, n_train=4, n_test_good=1, n_per_defect=1)
    table = SampleTable.build(tmp_path / "d" / "train", TableOptions(layout="unlabeled"))
    with pytest.raises(ValueError, match="needs labels to validate"):
        table.check_labels("task='classify'", "validate", training=False)
