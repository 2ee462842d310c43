"""QM9 as PyTorch Geometric's ``QM9`` dataset gives it, from PyG itself or built offline.

The main study trains on PyG's ``QM9``: 130,831 molecules (the 3,054 "uncharacterized" ones
of the 133,885 removed), 11 node features, the bonds as edges with a one-hot bond type
(single, double, triple, aromatic) and 19 targets in PyG's units. Two sources give the same
arrays (:class:`QM9Data`):

* ``"pyg"``: ``torch_geometric.datasets.QM9`` on a root directory the user names, or one PyG
  downloads (needs the ``graph`` extra and, on first use, internet). A thin layer over it.
* ``"qm9pack"``: an offline build from the ``qm9pack`` package (PyPI; QM9's geometries and
  computed properties, by its first author), with the bonds perceived by RDKit's
  ``rdDetermineBonds`` (needs the ``qm9`` extra). The features then follow PyG's processing
  (``torch_geometric/datasets/qm9.py``): each molecule is written as an MDL molblock and read
  back without sanitization, as PyG reads the SDF, so the aromatic and hybridization features
  and the 4-decimal coordinates come from the same RDKit calls. Unit conversions (Hartree ->
  eV) are PyG's; the atomization energies are the total energies minus PyG's atom reference
  energies (PyG takes them from MoleculeNet's CSV, in kcal/mol; they agree to about 1e-5
  relative). Molecules keep QM9's order, so the study's split indices select the same ones.

Bond perception: ``DetermineBonds(charge=0)`` (connectivity from covalent radii, then bond
orders, written in Kekule form: like gdb9.sdf, the build has no aromatic bond). Where bond
orders cannot be assigned (mostly strained bridged rings whose bridgeheads, about 1.87 A apart,
fall within the covalent cutoff), the connectivity is kept with single bonds: gdb9.sdf has the
same over-long bonds (PyG issue #10560, e.g. gdb_1150), which is why about 1,400 of its
molecules fail RDKit's sanitization. :func:`perception_report` compares the perceived
molecules with qm9pack's SMILES.

The build is cached (:mod:`smto.data.npz_cache`) under a key of the source files' SHA-256, the
RDKit version and :data:`FORMAT_VERSION`; a corrupt cache is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from smto._optional import require
from smto.data import npz_cache, paths
from smto.data.molecules import Molecules
from smto.errors import ConfigError, DataError, MissingError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
N_MOLECULES = 130_831
N_INDEXED = 133_885
MAX_ATOMS = 29
SPLIT_FILE = Path("seed_splits") / "QM9" / "indices.txt"
N_TEST = 10_000
N_VAL = 10_000

HAR2EV = 27.211386246
KCALMOL2EV = 0.04336414

# PyG's 19 targets, in its order, with the names of the main study's code.
TARGETS = (
    "mu",
    "alpha",
    "homo",
    "lumo",
    "epsilon",
    "r2",
    "zpve",
    "U0",
    "U",
    "H",
    "G",
    "Cv",
    "U0Atom",
    "UAtom",
    "HAtom",
    "GAtom",
    "A",
    "B",
    "C",
)
TARGET_UNITS = (
    "D",
    "a0^3",
    "eV",
    "eV",
    "eV",
    "a0^2",
    "eV",
    "eV",
    "eV",
    "eV",
    "eV",
    "cal/(mol K)",
    "eV",
    "eV",
    "eV",
    "eV",
    "GHz",
    "GHz",
    "GHz",
)
# qm9pack's column for each PyG target (the atomization energies are derived from 7..10).
_QM9PACK_COLUMNS = (
    "Dipole_debye",
    "Polarizability_bohr3",
    "HOMO_au",
    "LUMO_au",
    "HOMO_LUMO_gap_au",
    "R2_bohr2",
    "ZPVE_au",
    "InternalEnergy_0K_au",
    "InternalEnergy_298K_au",
    "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
    None,
    None,
    None,
    None,
    "RotA_GHz",
    "RotB_GHz",
    "RotC_GHz",
)
# PyG's conversion of each target from the raw units (Hartree -> eV where PyG converts).
CONVERSION = np.array(
    [1, 1, HAR2EV, HAR2EV, HAR2EV, 1, HAR2EV, HAR2EV, HAR2EV, HAR2EV, HAR2EV, 1]
    + [KCALMOL2EV] * 4
    + [1, 1, 1],
    dtype=np.float32,
)
# PyG's atom reference energies in eV (torch_geometric.datasets.qm9.atomrefs) of U0, U, H and
# G (its targets 7..10) for H, C, N, O, F; the atomization energy of target 12 + i is target
# 7 + i minus the sum over the atoms.
ELEMENTS = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS = (1, 6, 7, 8, 9)
ATOM_REFERENCE_EV = np.array(
    [
        [-13.61312172, -1029.86312267, -1485.30251237, -2042.61123593, -2713.48485589],
        [-13.5745904, -1029.82456413, -1485.26398105, -2042.5727046, -2713.44632457],
        [-13.54887564, -1029.79887659, -1485.2382935, -2042.54701705, -2713.42063702],
        [-13.90303183, -1030.25891228, -1485.71166277, -2043.01812778, -2713.88796536],
    ]
)
BOND_TYPES = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
NODE_FEATURE_NAMES = (
    "H",
    "C",
    "N",
    "O",
    "F",
    "atomic_number",
    "aromatic",
    "sp",
    "sp2",
    "sp3",
    "num_hs",
)
PERCEPTION_OUTCOMES = ("bonds", "hueckel", "bonds-differs", "connectivity-differs")
"""How a molecule's bonds were perceived (:func:`perceive`): "bonds" and "hueckel" give the
molecule of qm9pack's SMILES, the "-differs" outcomes another one."""
_ARRAYS = ("atom_counts", "bond_counts", "x", "pos", "bonds", "y", "index")


@dataclass
class QM9Data:
    """QM9 molecules as PyG's ``QM9`` holds them, packed molecule after molecule.

    Atom-level arrays concatenate the molecules' atoms (``atom_counts`` per molecule), bond
    arrays their bonds (``bond_counts``); ``bonds`` rows are (i, j, type) with molecule-local
    atoms i < j and type an index into :data:`BOND_TYPES`.
    """

    atom_counts: Tensor
    """(N,) int64 atoms per molecule."""
    bond_counts: Tensor
    """(N,) int64 bonds per molecule."""
    x: Tensor
    """(atoms, 11) float32 node features (:data:`NODE_FEATURE_NAMES`)."""
    pos: Tensor
    """(atoms, 3) float32 coordinates in Angstrom."""
    bonds: Tensor
    """(bonds, 3) int64: local atom i, local atom j > i, bond type."""
    y: Tensor
    """(N, 19) float32 targets (:data:`TARGETS`) in PyG's units (:data:`TARGET_UNITS`)."""
    index: Tensor
    """(N,) int64 each molecule's position in QM9's 133,885 (``gdb_{index + 1}``)."""

    def __len__(self) -> int:
        return int(self.atom_counts.shape[0])

    def __post_init__(self) -> None:
        n, atoms, nbonds = len(self), int(self.atom_counts.sum()), int(self.bond_counts.sum())
        expected = {
            "bond_counts": (n,),
            "x": (atoms, len(NODE_FEATURE_NAMES)),
            "pos": (atoms, 3),
            "bonds": (nbonds, 3),
            "y": (n, len(TARGETS)),
            "index": (n,),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise DataError(
                    f"QM9 arrays are inconsistent: {name} has shape "
                    f"{tuple(getattr(self, name).shape)}, expected {shape}"
                )
        if n and (int(self.atom_counts.min()) < 1 or int(self.atom_counts.max()) > MAX_ATOMS):
            raise DataError(f"QM9 molecules must have 1..{MAX_ATOMS} atoms")

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name, as NumPy (what the cache stores)."""
        return {name: getattr(self, name).numpy() for name in _ARRAYS}

    def subset(self, molecules: Sequence[int] | Tensor) -> QM9Data:
        """The molecules at positions ``molecules``, in that order."""
        sel = torch.as_tensor(molecules, dtype=torch.long)
        atom_start = torch.cumsum(self.atom_counts, 0) - self.atom_counts
        bond_start = torch.cumsum(self.bond_counts, 0) - self.bond_counts
        atoms = _ranges(atom_start[sel], self.atom_counts[sel])
        bonds = _ranges(bond_start[sel], self.bond_counts[sel])
        return QM9Data(
            atom_counts=self.atom_counts[sel].clone(),
            bond_counts=self.bond_counts[sel].clone(),
            x=self.x[atoms],
            pos=self.pos[atoms],
            bonds=self.bonds[bonds],
            y=self.y[sel],
            index=self.index[sel],
        )

    def molecule(self, i: int) -> dict[str, Tensor]:
        """Molecule ``i``: its ``x``, ``pos``, ``bonds`` and ``y`` (a (19,) tensor)."""
        part = self.subset([i])
        return {"x": part.x, "pos": part.pos, "bonds": part.bonds, "y": part.y[0]}

    def to_pyg_data_list(self) -> list:
        """The molecules as PyG ``Data`` objects in the layout of PyG's processed QM9: ``x``,
        ``z``, ``pos``, both directions of each bond in ``edge_index`` (sorted by source then
        target) with one-hot ``edge_attr``, ``y`` (1, 19), ``idx`` and ``name``."""
        pyg_data = require("torch_geometric.data", "graph", "QM9Data.to_pyg_data_list")
        out = []
        atom_start = torch.cumsum(self.atom_counts, 0) - self.atom_counts
        bond_start = torch.cumsum(self.bond_counts, 0) - self.bond_counts
        for m in range(len(self)):
            a0, n = int(atom_start[m]), int(self.atom_counts[m])
            b0, nb = int(bond_start[m]), int(self.bond_counts[m])
            b = self.bonds[b0 : b0 + nb]
            rows = torch.cat([b[:, 0], b[:, 1]])
            cols = torch.cat([b[:, 1], b[:, 0]])
            types = torch.cat([b[:, 2], b[:, 2]])
            perm = (rows * n + cols).argsort()
            x = self.x[a0 : a0 + n]
            out.append(
                pyg_data.Data(
                    x=x,
                    z=x[:, 5].long(),
                    pos=self.pos[a0 : a0 + n],
                    edge_index=torch.stack([rows[perm], cols[perm]]),
                    edge_attr=torch.nn.functional.one_hot(types[perm], len(BOND_TYPES)).float(),
                    y=self.y[m : m + 1],
                    idx=int(self.index[m]),
                    name=f"gdb_{int(self.index[m]) + 1}",
                )
            )
        return out


def _ranges(starts: Tensor, counts: Tensor) -> Tensor:
    """The concatenated ranges [start, start + count) of each pair."""
    if len(counts) == 0:
        return torch.zeros(0, dtype=torch.long)
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(int(counts.sum())) - torch.repeat_interleave(offsets, counts)
    return torch.repeat_interleave(starts, counts) + within


class PaddedQM9:
    """All molecules padded to 29 atoms, so that a batch is a few gathers.

    :meth:`batch` gives the molecules as the study's transforms make them: the complete graph
    without self loops, each edge with the bond type one-hot (zero for a non-bonded pair) and
    the distance (``T.Distance(norm=False)``), padded to the batch's largest molecule.
    """

    def __init__(self, data: QM9Data) -> None:
        n = len(data)
        self.counts = data.atom_counts.clone()
        mask = torch.arange(MAX_ATOMS)[None, :] < self.counts[:, None]
        self.x = torch.zeros(n, MAX_ATOMS, data.x.shape[1], dtype=torch.float32)
        self.x[mask] = data.x
        self.pos = torch.zeros(n, MAX_ATOMS, 3, dtype=torch.float32)
        self.pos[mask] = data.pos
        self.bond_type = torch.zeros(n, MAX_ATOMS, MAX_ATOMS, dtype=torch.uint8)
        molecule = torch.repeat_interleave(torch.arange(n), data.bond_counts)
        i, j, t = data.bonds.unbind(1)
        self.bond_type[molecule, i, j] = (t + 1).to(torch.uint8)
        self.bond_type[molecule, j, i] = (t + 1).to(torch.uint8)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def batch(self, molecules: Tensor) -> Molecules:
        """The molecules at positions ``molecules`` as one dense batch."""
        counts = self.counts[molecules]
        n = int(counts.max())
        mask = torch.arange(n)[None, :] < counts[:, None]
        pos = self.pos[molecules, :n]
        distance = (pos[:, None, :, :] - pos[:, :, None, :]).norm(dim=-1)
        onehot = torch.eye(len(BOND_TYPES) + 1)[self.bond_type[molecules, :n, :n].long()][..., 1:]
        pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
        edge_attr = torch.cat([onehot, distance.unsqueeze(-1)], dim=-1) * pair.unsqueeze(-1)
        return Molecules(self.x[molecules, :n], edge_attr, mask)


# ----------------------------------------------------------------------------- sources


def qm9pack_files(source_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """qm9pack's three data files (``qm9_part{1,2,3}.csv``), from ``source_dir`` or the
    installed package; MissingError saying what to install or where to put them otherwise."""
    if source_dir is not None:
        folder = Path(source_dir).expanduser()
    else:
        spec = find_spec("qm9pack")
        if spec is None or not spec.submodule_search_locations:
            raise MissingError(
                "the offline QM9 build needs the qm9pack package (QM9's geometries and "
                "properties) and rdkit (bond perception): pip install 'smto[qm9]'; or use "
                "source='pyg' with a PyTorch Geometric QM9 root"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [folder / f"qm9_part{i}.csv" for i in (1, 2, 3)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MissingError(
            f"qm9pack's data files are missing: {', '.join(missing)} (reinstall it: pip "
            "install --force-reinstall qm9pack, or name the folder holding qm9_part1.csv, "
            "qm9_part2.csv and qm9_part3.csv)"
        )
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_qm9pack(files: Sequence[Path]):
    """qm9pack's table, checked: 130,831 molecules in QM9's order."""
    pandas = require("pandas", "qm9", "the offline QM9 build")
    columns = ["Index", "SMILES", "Elements", "XYZ_Ang", *[c for c in _QM9PACK_COLUMNS if c]]
    try:
        table = pandas.concat(
            [pandas.read_csv(f, usecols=columns) for f in files], ignore_index=True
        )
    except ValueError as error:
        raise DataError(
            f"{files[0].parent} does not hold qm9pack's QM9 tables ({error}); reinstall "
            "qm9pack, or use source='pyg'"
        ) from None
    index = table["Index"].to_numpy()
    if len(table) != N_MOLECULES or not (np.diff(index) > 0).all() or index.max() > N_INDEXED:
        raise DataError(
            f"qm9pack's tables in {files[0].parent} hold {len(table)} molecules (expected "
            f"{N_MOLECULES}, in increasing index order up to {N_INDEXED}); reinstall qm9pack"
        )
    return table


@contextlib.contextmanager
def _quiet_c_output() -> Iterator[None]:
    """Silences C-level writes to stdout and stderr (RDKit's extended Hueckel code prints a
    warning per short bond); Python exceptions still propagate."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def perceive(elements: Sequence[str], xyz: np.ndarray, smiles: str | None = None):
    """The RDKit molecule of one geometry with perceived bonds, and the outcome
    (:data:`PERCEPTION_OUTCOMES`).

    ``DetermineBonds(charge=0)`` first. When it fails, or gives another molecule than
    ``smiles`` (when given), the extended Hueckel connectivity with bond orders is tried and
    kept if it gives the molecule of ``smiles``. Otherwise the first result stands, or, when
    bond orders could not be assigned at all, the covalent-radius connectivity with single
    bonds.
    """
    chem = require("rdkit.Chem", "qm9", "the offline QM9 build")
    determine = require("rdkit.Chem.rdDetermineBonds", "qm9", "the offline QM9 build")
    block = f"{len(elements)}\n\n" + "\n".join(
        f"{e} {x:.10f} {y:.10f} {z:.10f}" for e, (x, y, z) in zip(elements, xyz)
    )
    mol = chem.MolFromXYZBlock(block)
    try:
        determine.DetermineBonds(mol, charge=0)
        ordered = True
    except (ValueError, RuntimeError):
        ordered = False
    if ordered and (smiles is None or _same_as_smiles(chem, mol, smiles)):
        return mol, "bonds"
    if smiles is not None:
        hueckel = chem.MolFromXYZBlock(block)
        try:
            with _quiet_c_output():
                determine.DetermineConnectivity(hueckel, useHueckel=True)
            determine.DetermineBondOrders(hueckel, charge=0)
            if _same_as_smiles(chem, hueckel, smiles):
                return hueckel, "hueckel"
        except (ValueError, RuntimeError):
            pass
    if ordered:
        return mol, "bonds-differs"
    mol = chem.MolFromXYZBlock(block)
    determine.DetermineConnectivity(mol)
    return mol, "connectivity-differs"


def pyg_features(mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyG's QM9 processing of one molecule read without sanitization: node features (n, 11),
    positions (n, 3) and bonds (b, 3) as (i < j, j, type)."""
    chem = require("rdkit.Chem", "qm9", "the offline QM9 build")
    hybrid = chem.rdchem.HybridizationType
    bond_index = {getattr(chem.rdchem.BondType, name): k for k, name in enumerate(BOND_TYPES)}
    n = mol.GetNumAtoms()
    x = np.zeros((n, len(NODE_FEATURE_NAMES)), dtype=np.float32)
    for k, atom in enumerate(mol.GetAtoms()):
        x[k, ELEMENTS.index(atom.GetSymbol())] = 1
        x[k, 5] = atom.GetAtomicNum()
        x[k, 6] = atom.GetIsAromatic()
        h = atom.GetHybridization()
        x[k, 7], x[k, 8], x[k, 9] = h == hybrid.SP, h == hybrid.SP2, h == hybrid.SP3
    bonds = np.zeros((mol.GetNumBonds(), 3), dtype=np.int64)
    for k, bond in enumerate(mol.GetBonds()):
        i, j = sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        try:
            bonds[k] = (i, j, bond_index[bond.GetBondType()])
        except KeyError:
            raise DataError(f"bond type {bond.GetBondType()} is none of {BOND_TYPES}") from None
        # num_hs: hydrogens bonded to each atom (PyG scatters over both directions)
        x[j, 10] += x[i, 0]
        x[i, 10] += x[j, 0]
    pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float32)
    return x, pos, bonds[np.lexsort((bonds[:, 1], bonds[:, 0]))]


def _same_as_smiles(chem, mol, smiles: str) -> bool:
    """Whether ``mol`` (perceived, with hydrogens) is the molecule of ``smiles`` (atoms, bonds,
    bond orders and charges; stereo ignored)."""
    try:
        perceived = chem.Mol(mol)
        chem.SanitizeMol(perceived)
        reference = chem.AddHs(chem.MolFromSmiles(smiles))
        return chem.MolToSmiles(perceived, isomericSmiles=False) == chem.MolToSmiles(
            reference, isomericSmiles=False
        )
    except Exception:
        return False


def _process_one(args: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One qm9pack row (Elements, XYZ_Ang, SMILES) -> PyG's features, positions and bonds,
    and the perception's outcome (:func:`perceive`)."""
    chem = require("rdkit.Chem", "qm9", "the offline QM9 build")
    require("rdkit.RDLogger", "qm9", "the offline QM9 build").DisableLog("rdApp.*")
    elements_text, xyz_text, smiles = args
    elements = [e.strip().strip("'\"") for e in elements_text.strip("[]").split(",")]
    xyz = np.array(xyz_text.replace("[", " ").replace("]", " ").split(","), dtype=np.float64)
    mol, how = perceive(elements, xyz.reshape(-1, 3), smiles)
    # as PyG reads the SDF: a molblock (Kekule bonds, 4-decimal coordinates), unsanitized
    block = chem.MolToMolBlock(mol, kekulize=True)
    reread = chem.MolFromMolBlock(block, removeHs=False, sanitize=False)
    x, pos, bonds = pyg_features(reread)
    return x, pos, bonds, how


def targets_from_qm9pack(table) -> np.ndarray:
    """The (N, 19) float32 targets in PyG's order and units from qm9pack's columns."""
    raw = np.zeros((len(table), len(TARGETS)), dtype=np.float64)
    for k, column in enumerate(_QM9PACK_COLUMNS):
        if column is not None:
            raw[:, k] = table[column].to_numpy(dtype=np.float64)
    # PyG: float32 values times float32 conversion factors
    y = raw.astype(np.float32) * CONVERSION
    counts = np.zeros((len(table), len(ELEMENTS)), dtype=np.float64)
    for k, element in enumerate(ELEMENTS):
        counts[:, k] = table["Elements"].str.count(f"'{element}'").to_numpy()
    for k in range(4):  # U0, U, H, G minus the atoms' reference energies, in eV
        energy_ev = raw[:, 7 + k] * HAR2EV
        y[:, 12 + k] = (energy_ev - counts @ ATOM_REFERENCE_EV[k]).astype(np.float32)
    return y


def build_from_qm9pack(
    source_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    processes: int | None = None,
) -> tuple[QM9Data, dict[str, int]]:
    """Builds QM9 from qm9pack's tables (the first ``limit`` molecules, or all), with
    ``processes`` worker processes (default: the CPUs). Returns the data and how many
    molecules had each perception outcome (:data:`PERCEPTION_OUTCOMES`)."""
    require("rdkit.Chem", "qm9", "the offline QM9 build")
    table = _read_qm9pack(qm9pack_files(source_dir))
    if limit is not None:
        table = table.iloc[:limit]
    rows = list(zip(table["Elements"], table["XYZ_Ang"], table["SMILES"]))
    processes = processes or os.cpu_count() or 1
    if processes > 1 and len(rows) > 2000:
        import multiprocessing

        # fork where there is one: spawned workers would re-import a caller's main module
        start_methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in start_methods else "spawn")
        with context.Pool(processes) as pool:
            results = pool.map(_process_one, rows, chunksize=500)
    else:
        results = [_process_one(r) for r in rows]
    methods = dict.fromkeys(PERCEPTION_OUTCOMES, 0)
    for *_, how in results:
        methods[how] += 1
    data = QM9Data(
        atom_counts=torch.tensor([len(r[0]) for r in results], dtype=torch.long),
        bond_counts=torch.tensor([len(r[2]) for r in results], dtype=torch.long),
        x=torch.from_numpy(np.concatenate([r[0] for r in results])),
        pos=torch.from_numpy(np.concatenate([r[1] for r in results])),
        bonds=torch.from_numpy(np.concatenate([r[2] for r in results])),
        y=torch.from_numpy(targets_from_qm9pack(table)),
        index=torch.from_numpy(table["Index"].to_numpy(dtype=np.int64) - 1),
    )
    return data, methods


def load_from_pyg(root: str | os.PathLike[str], download: bool = True) -> QM9Data:
    """PyG's ``QM9`` at ``root`` (PyG downloads and processes it there when ``download`` and
    it is absent), as :class:`QM9Data`."""
    datasets = require("torch_geometric.datasets", "graph", "QM9 from PyTorch Geometric")
    root = Path(root).expanduser()
    if not download and not (root / "processed" / "data_v3.pt").is_file():
        raise MissingError(
            f"no PyTorch Geometric QM9 at {root} (expected {root / 'processed' / 'data_v3.pt'}"
            "); let PyG download it (download=True, needs internet), or use source='qm9pack' "
            "to build it offline"
        )
    try:
        dataset = datasets.QM9(str(root))
    except Exception as error:
        raise DataError(
            f"PyTorch Geometric could not load or download QM9 at {root}: {error}"
        ) from error
    store, slices = dataset._data, dataset.slices
    atom_counts = slices["x"].diff()
    edge_counts = slices["edge_index"].diff()
    src, dst = store.edge_index
    types = store.edge_attr.argmax(dim=1)
    keep = src < dst
    molecule = torch.repeat_interleave(torch.arange(len(atom_counts)), edge_counts)
    bond_counts = torch.bincount(molecule[keep], minlength=len(atom_counts))
    return QM9Data(
        atom_counts=atom_counts,
        bond_counts=bond_counts,
        x=store.x.float(),
        pos=store.pos.float(),
        bonds=torch.stack([src[keep], dst[keep], types[keep]], dim=1),
        y=store.y.float(),
        index=store.idx.long() if "idx" in slices else torch.arange(len(atom_counts)),
    )


def _auto_source(root: str | os.PathLike[str] | None, pyg_root: Path) -> str:
    """ "pyg" for a processed PyG root, "qm9pack" for qm9pack's files (in ``root`` or
    installed), "pyg" (to download) otherwise."""
    if (pyg_root / "processed" / "data_v3.pt").is_file():
        return "pyg"
    if root is None:
        return "qm9pack" if find_spec("qm9pack") is not None else "pyg"
    return "qm9pack" if (Path(root).expanduser() / "qm9_part1.csv").is_file() else "pyg"


def _cache_key(files: Sequence[Path], limit: int | None) -> str:
    rdkit = require("rdkit", "qm9", "the offline QM9 build")
    params = {
        "format": FORMAT_VERSION,
        "source": "qm9pack",
        "files_sha256": [_sha256(f) for f in files],
        "rdkit": rdkit.__version__,
        "limit": limit,
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def load_qm9(
    source: str = "auto",
    root: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    download: bool = True,
    use_cache: bool = True,
) -> QM9Data:
    """QM9 from ``source``:

    * ``"pyg"``: PyG's ``QM9`` at ``root`` (default ``<data dir>/QM9``), downloaded there by
      PyG when absent and ``download``;
    * ``"qm9pack"``: the offline build, from ``root`` (a folder with qm9pack's
      ``qm9_part{1,2,3}.csv``) or the installed qm9pack package, cached in ``cache_dir``
      (default ``paths.cache_dir``) and rebuilt, with a warning, when the cache is corrupt;
    * ``"auto"``: ``"pyg"`` when the PyG root (``root``, default ``<data dir>/QM9``) holds a
      processed PyG QM9, else ``"qm9pack"`` when qm9pack is installed (or ``root`` holds its
      files), else ``"pyg"``.

    ``limit`` keeps the first molecules only (the offline build then builds only those).
    """
    if source not in ("auto", "pyg", "qm9pack"):
        raise ConfigError(f"source must be 'auto', 'pyg' or 'qm9pack', got {source!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    pyg_root = Path(root).expanduser() if root is not None else paths.data_dir(data_dir) / "QM9"
    if source == "auto":
        source = _auto_source(root, pyg_root)
    if source == "pyg":
        data = load_from_pyg(pyg_root, download=download)
        return data.subset(range(min(limit, len(data)))) if limit is not None else data

    files = qm9pack_files(root)
    key = _cache_key(files, limit)
    path = paths.cache_dir(cache_dir, data_dir) / "qm9" / f"qm9pack-{key[:20]}.npz"
    if use_cache and path.is_file():
        try:
            arrays = npz_cache.read_verified(path, key, _ARRAYS)
            return QM9Data(**{k: torch.from_numpy(v) for k, v in arrays.items()})
        except DataError as error:
            warnings.warn(
                f"ignoring the QM9 cache {path}: {error}; rebuilding it",
                RuntimeWarning,
                stacklevel=2,
            )
    log.info("building QM9 from qm9pack (bond perception with RDKit); cached at %s", path)
    data, methods = build_from_qm9pack(root, limit=limit)
    log.info("QM9 bonds perceived: %s", methods)
    if use_cache:
        try:
            npz_cache.write_atomic(path, key, data.arrays())
        except OSError as exc:
            warnings.warn(f"could not write the QM9 cache {path}: {exc}", stacklevel=2)
    return data


# ----------------------------------------------------------------------------- splits


def read_split_indices(path: str | os.PathLike[str], n_molecules: int = N_MOLECULES) -> Tensor:
    """The study's shuffled molecule order (one index per line, a permutation of
    0..n_molecules-1); MissingError or DataError naming the file otherwise."""
    path = Path(path).expanduser()
    try:
        values = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except FileNotFoundError:
        raise MissingError(
            f"no QM9 split file at {path}: put the study's indices.txt there (seed_splits/QM9/"
            "indices.txt of the data directory), or use split='seed'"
        ) from None
    except ValueError as error:
        raise DataError(f"the QM9 split file {path} is not one integer per line: {error}") from None
    if len(values) != n_molecules or not np.array_equal(np.sort(values), np.arange(n_molecules)):
        raise DataError(
            f"the QM9 split file {path} is not a permutation of 0..{n_molecules - 1} "
            f"({len(values)} values)"
        )
    return torch.from_numpy(values)


def seeded_order(n_molecules: int = N_MOLECULES, seed: int = 0) -> Tensor:
    """The order the study's loader makes without a split file: ``random.Random(seed)``
    shuffling ``list(range(n))``."""
    import random

    order = list(range(n_molecules))
    random.Random(seed).shuffle(order)
    return torch.tensor(order, dtype=torch.long)


def split_order(order: Tensor) -> dict[str, Tensor]:
    """The study's split of an order: the first 10,000 test, the next 10,000 val, the rest
    train."""
    return {
        "train": order[N_TEST + N_VAL :],
        "val": order[N_TEST : N_TEST + N_VAL],
        "test": order[:N_TEST],
    }
