"""Parse-time checks of the fold inputs: every problem stops Snakemake with one
line naming the config key or file, the problem and the fix, before any job
(so no partial output). Jobs check again (the same readers), for runs that
bypass the Snakefile.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from warpbio.fold.msa import InputError, Target, read_msa, read_targets

PAE_SCOPE = "alphafold/alphafold_iteration/predicted_aligned_error_head/"
EVOFORMER_SCOPE = "alphafold/alphafold_iteration/evoformer/evoformer_iteration/"


@dataclass
class FoldInputs:
    settings: dict[str, Any]
    targets: list[Target] = field(default_factory=list)

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> FoldInputs:
        return cls(dict(settings))

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    def check(self) -> None:
        """Raise ValueError (one line) for the first problem found."""
        try:
            self._check()
        except InputError as error:
            raise ValueError(str(error)) from None

    def _check(self) -> None:
        fasta = self.settings.get("fasta", "")
        if not fasta:
            raise ValueError("config key 'fold.fasta' is empty; give the FASTA file of the targets")
        if not Path(fasta).exists():
            raise ValueError(
                f"config key 'fold.fasta': input file '{fasta}' does not exist; fix the path "
                "(relative paths start at the working directory)"
            )
        self.targets = read_targets(fasta)
        self._check_msas()
        self._check_weights()
        if self.settings.get("relax"):
            import importlib.util

            for module in ("openmm", "pdbfixer"):
                if importlib.util.find_spec(module) is None:
                    raise ValueError(
                        f"config key 'fold.relax' = True needs the Python package {module}; "
                        "pip install openmm pdbfixer (or set fold.relax: false)"
                    )
        for name, path in self.settings.get("references", {}).items():
            if name not in self.target_names:
                raise ValueError(
                    f"config key 'fold.references.{name}': no target named {name!r} in {fasta}"
                )
            if not Path(path).exists():
                raise ValueError(
                    f"config key 'fold.references.{name}': file '{path}' does not exist"
                )

    def _check_msas(self) -> None:
        msa = self.settings["msa"]
        mode = msa["mode"]
        if mode == "files":
            for target in self.targets:
                path = msa["files"].get(target.name)
                if not path:
                    raise ValueError(
                        f"config key 'fold.msa.files' has no MSA for target {target.name!r}; "
                        "add '<target>: path.a3m' or set fold.msa.mode to single_sequence, "
                        "mmseqs2 or jackhmmer"
                    )
                if not Path(path).exists():
                    raise ValueError(
                        f"config key 'fold.msa.files.{target.name}': input file '{path}' does "
                        "not exist; fix the path"
                    )
                read_msa(path, target.sequence)  # query, widths, emptiness
        elif mode in ("mmseqs2", "jackhmmer"):
            database = msa.get("database", "")
            if not database or not Path(database).exists():
                raise ValueError(
                    f"config key 'fold.msa.database' = {database!r}: fold.msa.mode {mode} needs "
                    "an existing FASTA sequence database"
                )
            binary = "mmseqs" if mode == "mmseqs2" else "jackhmmer"
            if shutil.which(binary) is None:
                package = "mmseqs2" if mode == "mmseqs2" else "hmmer"
                raise ValueError(
                    f"config key 'fold.msa.mode' = {mode!r} needs '{binary}' on PATH; install "
                    f"it (Debian: apt-get install {package}) or give MSA files"
                )

    def _check_weights(self) -> None:
        folder = self.settings["weights"]["folder"]
        if not folder:
            return  # seeded random demo parameters
        if not Path(folder).is_dir():
            raise ValueError(
                f"config key 'fold.weights.folder': '{folder}' is not a folder; give the folder "
                "with the official params_model_*.npz files (nothing is downloaded)"
            )
        for model in self.settings["models"]:
            check_weights_file(Path(folder) / f"params_{model}.npz", model)


def check_weights_file(path: str | os.PathLike, model: str) -> None:
    """Cheap check from the npz directory (no array read): right model kind."""
    if not Path(path).exists():
        raise ValueError(
            f"weights file '{path}' for fold model {model} does not exist; put the official "
            f"params_{model}.npz in fold.weights.folder"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
    except (OSError, ValueError) as error:
        raise ValueError(f"weights file '{path}' is not a readable npz ({error})") from None
    if not any(k.startswith(EVOFORMER_SCOPE) for k in keys):
        raise ValueError(
            f"weights file '{path}' has no AlphaFold2 monomer Evoformer keys; give an "
            "official params_model_*.npz (multimer weights are not supported)"
        )
    has_pae = any(k.startswith(PAE_SCOPE) for k in keys)
    if model.endswith("_ptm") and not has_pae:
        raise ValueError(
            f"weights file '{path}' has no predicted-aligned-error head but {model} is a pTM "
            "model: these are non-pTM weights; use params_<model>_ptm.npz or drop _ptm"
        )
    if not model.endswith("_ptm") and has_pae:
        raise ValueError(
            f"weights file '{path}' has a predicted-aligned-error head: these are pTM weights, "
            f"but {model} is not a pTM model; name the model {model}_ptm"
        )
