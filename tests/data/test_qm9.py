"""QM9: the offline build from qm9pack + RDKit, PyG's format, the cache and the split."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from smto.data import qm9
from smto.errors import DataError, MissingError

pytest.importorskip("rdkit", reason="the offline QM9 build needs rdkit (the qm9 extra)")
if qm9.find_spec("qm9pack") is None:
    pytest.skip("the offline QM9 build needs qm9pack (the qm9 extra)", allow_module_level=True)

SUBSET = 300


@pytest.fixture(scope="module")
def subset() -> qm9.QM9Data:
    data, outcomes = qm9.build_from_qm9pack(limit=SUBSET, processes=1)
    assert sum(outcomes.values()) == SUBSET
    return data


@pytest.fixture(scope="module")
def raw_table():
    pandas = pytest.importorskip("pandas")
    return pandas.read_csv(qm9.qm9pack_files()[0], nrows=SUBSET)


def _types(x: torch.Tensor) -> list[str]:
    return [qm9.ELEMENTS[int(k)] for k in x[:, :5].argmax(dim=1)]


def _bonds(m: dict) -> list[tuple[str, str, str]]:
    """The bonds as (element, element, type), elements in alphabetical order."""
    symbols = _types(m["x"])
    return sorted(
        (*sorted((symbols[i], symbols[j])), qm9.BOND_TYPES[t]) for i, j, t in m["bonds"].tolist()
    )


# The first molecules of QM9 (gdb_1 .. gdb_6, gdb_12) and their bonds, checked by hand.
FIRST_MOLECULES = {
    0: ("methane", [("C", "H", "SINGLE")] * 4),
    1: ("ammonia", [("H", "N", "SINGLE")] * 3),
    2: ("water", [("H", "O", "SINGLE")] * 2),
    3: ("acetylene", [("C", "C", "TRIPLE"), ("C", "H", "SINGLE"), ("C", "H", "SINGLE")]),
    4: ("hydrogen cyanide", [("C", "H", "SINGLE"), ("C", "N", "TRIPLE")]),
    5: ("formaldehyde", [("C", "H", "SINGLE"), ("C", "H", "SINGLE"), ("C", "O", "DOUBLE")]),
}


@pytest.mark.parametrize("position", sorted(FIRST_MOLECULES))
def test_the_first_molecules_have_the_bonds_checked_by_hand(subset, position):
    name, expected = FIRST_MOLECULES[position]
    m = subset.molecule(position)
    assert _bonds(m) == sorted(expected), name


def test_formamide_has_a_carbonyl_and_an_amine():
    """gdb_12, NC=O: C=O double, C-N single, N with two hydrogens."""
    data, _ = qm9.build_from_qm9pack(limit=12, processes=1)
    m = data.molecule(11)
    symbols = _types(m["x"])
    heavy = [b for b in _bonds(m) if "H" not in b[:2]]
    assert heavy == [("C", "N", "SINGLE"), ("C", "O", "DOUBLE")]
    n = symbols.index("N")
    assert m["x"][n, 10] == 2  # num_hs


def test_node_features_follow_pyg_for_methane_and_hcn(subset):
    methane = subset.molecule(0)["x"]
    # PyG: one-hot H C N O F, atomic number, aromatic, sp, sp2, sp3 (unset: the SDF is read
    # without sanitization), number of bonded hydrogens
    assert methane[0].tolist() == [0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 4]
    assert methane[1:].tolist() == [[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]] * 4
    hcn = subset.molecule(4)["x"]
    by_symbol = dict(zip(_types(hcn), hcn.tolist()))
    assert by_symbol["C"] == [0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 1]
    assert by_symbol["N"] == [0, 0, 1, 0, 0, 7, 0, 0, 0, 0, 0]


def test_num_hs_counts_bonded_hydrogens_everywhere(subset):
    atom_start = torch.cumsum(subset.atom_counts, 0) - subset.atom_counts
    bond_start = torch.cumsum(subset.bond_counts, 0) - subset.bond_counts
    for m in range(0, SUBSET, 37):
        x = subset.x[atom_start[m] : atom_start[m] + subset.atom_counts[m]]
        bonds = subset.bonds[bond_start[m] : bond_start[m] + subset.bond_counts[m]]
        expected = torch.zeros(len(x))
        for i, j, _ in bonds.tolist():
            expected[i] += x[j, 0]
            expected[j] += x[i, 0]
        assert torch.equal(x[:, 10], expected)


def test_positions_are_the_geometry_at_the_sdf_precision(subset, raw_table):
    xyz = np.array(
        raw_table["XYZ_Ang"].iloc[3].replace("[", " ").replace("]", " ").split(","), dtype=float
    ).reshape(-1, 3)
    np.testing.assert_allclose(subset.molecule(3)["pos"].numpy(), xyz, atol=5.1e-5)
    assert np.allclose(subset.pos.numpy() * 1e4, np.round(subset.pos.numpy() * 1e4), atol=1e-2)


def test_unit_conversions_against_the_raw_qm9pack_values(subset, raw_table):
    y = subset.y.numpy()
    hartree = {
        2: "HOMO_au",
        3: "LUMO_au",
        4: "HOMO_LUMO_gap_au",
        6: "ZPVE_au",
        7: "InternalEnergy_0K_au",
        10: "GibbsFreeEnergy_298K_au",
    }
    for k, column in hartree.items():
        np.testing.assert_allclose(y[:, k], raw_table[column] * 27.211386246, rtol=1e-6)
    same = {
        0: "Dipole_debye",
        1: "Polarizability_bohr3",
        5: "R2_bohr2",
        11: "Heatcapacity_Cv_cal_mol_K",
    }
    for k, column in same.items():
        np.testing.assert_array_equal(y[:, k], raw_table[column].to_numpy(np.float32))
    np.testing.assert_array_equal(y[:, 16], raw_table["RotA_GHz"].to_numpy(np.float32))


def test_methane_atomization_energy_from_qm9s_hartree_references(subset):
    # QM9's atom reference energies (Hartree): H -0.500273, C -37.846772 (U0)
    expected = (-40.47893 - (-37.846772 + 4 * -0.500273)) * 27.211386246
    assert subset.y[0, 12].item() == pytest.approx(expected, abs=2e-4)
    assert expected == pytest.approx(-17.1722, abs=1e-3)


def test_atom_reference_energies_are_pygs():
    pyg_qm9 = pytest.importorskip("torch_geometric.datasets.qm9")
    for k in range(4):
        assert qm9.ATOM_REFERENCE_EV[k].tolist() == pyg_qm9.atomrefs[7 + k]
    assert qm9.HAR2EV == pyg_qm9.HAR2EV
    np.testing.assert_array_equal(qm9.CONVERSION, pyg_qm9.conversion.numpy())


def test_the_order_is_qm9s_and_no_aromatic_bond_is_written(subset):
    assert subset.index[:5].tolist() == [0, 1, 2, 3, 4]
    assert (subset.index.diff() > 0).all()
    assert int((subset.bonds[:, 2] == qm9.BOND_TYPES.index("AROMATIC")).sum()) == 0
    assert float(subset.x[:, 6:10].abs().sum()) == 0  # aromatic, sp, sp2, sp3 unset, as PyG's


def test_subset_round_trips_molecule_by_molecule(subset):
    part = subset.subset([5, 0, 7])
    for k, m in enumerate([5, 0, 7]):
        a, b = part.molecule(k), subset.molecule(m)
        for key in ("x", "pos", "bonds", "y"):
            assert torch.equal(a[key], b[key])


def test_padded_batches_are_the_complete_graph_with_distances(subset):
    padded = qm9.PaddedQM9(subset)
    batch = padded.batch(torch.tensor([0, 3]))  # methane (5 atoms), acetylene (4)
    assert batch.x.shape == (2, 5, 11)
    assert batch.mask.tolist() == [[True] * 5, [True] * 4 + [False]]
    acetylene = subset.molecule(3)
    i, j, _ = acetylene["bonds"][0].tolist()
    pos = acetylene["pos"]
    edge = batch.edge_attr[1, i, j]
    assert edge[:4].tolist() == [0, 0, 1, 0]  # triple
    assert edge[4].item() == pytest.approx(float((pos[i] - pos[j]).norm()), rel=1e-6)
    assert torch.equal(batch.edge_attr, batch.edge_attr.transpose(1, 2))
    assert float(batch.edge_attr[1, 4].abs().sum() + batch.edge_attr[1, :, 4].abs().sum()) == 0
    assert float(torch.diagonal(batch.edge_attr, dim1=1, dim2=2).abs().sum()) == 0
    # non-bonded pair of methane: H-H, bond one-hot zero, distance kept
    assert batch.edge_attr[0, 1, 2, :4].tolist() == [0, 0, 0, 0]
    assert batch.edge_attr[0, 1, 2, 4] > 1.5


def test_pyg_batches_follow_the_complete_transform(subset):
    pytest.importorskip("torch_geometric")
    from torch_geometric.utils import remove_self_loops

    padded = qm9.PaddedQM9(subset)
    graph = padded.batch(torch.tensor([4])).to_pyg()  # HCN, 3 atoms
    n = 3
    row = torch.arange(n).view(-1, 1).repeat(1, n).view(-1)
    col = torch.arange(n).repeat(n)
    expected, _ = remove_self_loops(torch.stack([row, col]))
    assert torch.equal(graph.edge_index, expected)


# ----------------------------------------------------------------- the PyG source


def _write_pyg_root(data: qm9.QM9Data, root: Path) -> None:
    """A PyG QM9 root in PyG's processed format, as its ``QM9.process`` leaves it."""
    pyg_data = pytest.importorskip("torch_geometric.data")
    (root / "raw").mkdir(parents=True)
    for name in ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt", "qm9_v3.pt"):
        (root / "raw" / name).touch()
    (root / "processed").mkdir()
    pyg_data.InMemoryDataset.save(data.to_pyg_data_list(), str(root / "processed" / "data_v3.pt"))


def test_a_pyg_root_gives_the_same_tensors_as_the_offline_build(subset, tmp_path):
    pytest.importorskip("torch_geometric")
    part = subset.subset(range(40))
    _write_pyg_root(part, tmp_path / "QM9")
    loaded = qm9.load_qm9("pyg", tmp_path / "QM9", download=False)
    for name, value in part.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], value, err_msg=name)
    auto = qm9.load_qm9("auto", tmp_path / "QM9", download=False)
    assert torch.equal(auto.y, part.y)


def test_a_missing_pyg_root_says_what_to_do(tmp_path):
    pytest.importorskip("torch_geometric")
    with pytest.raises(MissingError, match=r"download=True|qm9pack"):
        qm9.load_qm9("pyg", tmp_path / "nothing", download=False)


# ----------------------------------------------------------------- cache and errors


def test_the_build_is_cached_and_a_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    calls = []
    real = qm9.build_from_qm9pack

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(qm9, "build_from_qm9pack", counting)
    first = qm9.load_qm9("qm9pack", limit=20, cache_dir=tmp_path)
    again = qm9.load_qm9("qm9pack", limit=20, cache_dir=tmp_path)
    assert len(calls) == 1 and torch.equal(first.y, again.y)
    (cache,) = (tmp_path / "qm9").glob("*.npz")
    blob = bytearray(cache.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    cache.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = qm9.load_qm9("qm9pack", limit=20, cache_dir=tmp_path)
    assert len(calls) == 2 and torch.equal(rebuilt.pos, first.pos)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qm9.load_qm9("qm9pack", limit=20, cache_dir=tmp_path)
    assert len(calls) == 2


def test_missing_qm9pack_files_name_what_to_do(tmp_path):
    with pytest.raises(MissingError, match=r"qm9_part1\.csv"):
        qm9.qm9pack_files(tmp_path)


def test_a_missing_qm9pack_names_the_extra(monkeypatch):
    monkeypatch.setattr(qm9, "find_spec", lambda name: None)
    with pytest.raises(MissingError, match=r"smto\[qm9\]"):
        qm9.qm9pack_files()


def test_a_missing_rdkit_names_the_extra(monkeypatch):
    import sys

    for name in ("rdkit", "rdkit.Chem", "rdkit.Chem.rdDetermineBonds", "rdkit.RDLogger"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"smto\[qm9\]"):
        qm9.build_from_qm9pack(limit=3)


def test_a_wrong_qm9pack_table_is_a_clear_error(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"qm9_part{i}.csv").write_text("Index,SMILES\n1,C\n")
    with pytest.raises(DataError, match="qm9pack"):
        qm9.build_from_qm9pack(tmp_path, limit=1)


# ----------------------------------------------------------------- the split


def test_split_file_errors(tmp_path):
    with pytest.raises(MissingError, match=r"indices\.txt"):
        qm9.read_split_indices(tmp_path / "indices.txt", 5)
    (tmp_path / "bad.txt").write_text("0\n1\n1\n")
    with pytest.raises(DataError, match="permutation"):
        qm9.read_split_indices(tmp_path / "bad.txt", 3)


def test_seeded_order_is_the_studys_fallback_shuffle():
    import random

    order = list(range(50))
    random.Random(0).shuffle(order)
    assert qm9.seeded_order(50, 0).tolist() == order


def test_the_studys_split_file_gives_its_split_sizes():
    root = os.environ.get("SMTO_DATA")
    path = Path(root) / qm9.SPLIT_FILE if root else None
    if path is None or not path.is_file():
        pytest.skip("the study's QM9 split file is not here (set SMTO_DATA to ../shared/data)")
    order = qm9.read_split_indices(path)
    splits = qm9.split_order(order)
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 110_831,
        "val": 10_000,
        "test": 10_000,
    }
    assert torch.equal(splits["test"], order[:10_000])
    joined = torch.cat([splits["train"], splits["val"], splits["test"]])
    assert torch.equal(joined.sort().values, torch.arange(qm9.N_MOLECULES))
