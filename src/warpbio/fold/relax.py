"""Amber relaxation of a predicted structure (OpenMM), as AlphaFold2 does it.

PDBFixer adds the terminal oxygen and the hydrogens; the Amber99sb force field
(no cutoff, bonds to hydrogen constrained) plus harmonic restraints on the heavy
atoms (10 kcal/mol/A^2 to their predicted positions) is minimised by L-BFGS to
convergence. AlphaFold2 then repeats the minimisation while it finds
stereochemical violations, releasing the restraints on violating residues; this
release runs the first (main) round only. pLDDT stays in the B-factor column.
"""

from __future__ import annotations

import io
import logging
import random

import numpy as np

log = logging.getLogger(__name__)

STIFFNESS_KCAL_PER_A2 = 10.0
# OpenMM >= 8 reads the tolerance as a force (kJ/mol/nm); AF2's 2.39 kcal/mol ~ 10 of these
TOLERANCE_KJ_PER_NM = 10.0


def relax_pdb(pdb_text: str, use_gpu: bool = False, max_iterations: int = 0) -> tuple[str, dict]:
    """(relaxed PDB text with hydrogens, energies and displacement)."""
    import openmm
    from openmm import app, unit
    from pdbfixer import PDBFixer

    plddt = _bfactors_by_residue(pdb_text)
    fixer = PDBFixer(pdbfile=io.StringIO(pdb_text))
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # never model residues that were not predicted
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    fixer.removeHeterogens(keepWater=False)
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    # Reruns must give the same structure. OpenMM's CPU platform sums forces in single
    # precision in an order that changes from run to run (energies of clashing
    # random-parameter models moved by 1e-5 relative, and the minimiser ended
    # elsewhere), and hydrogens start at random offsets and are placed by a short
    # minimisation on the fastest platform (PDBFixer's addMissingHydrogens). So the
    # offsets are seeded and both minimisations run on the double-precision
    # Reference platform on the CPU, and CUDA is asked for deterministic force sums.
    platform = openmm.Platform.getPlatformByName("CUDA" if use_gpu else "Reference")
    properties = {"DeterministicForces": "true"} if use_gpu else {}
    forcefield = app.ForceField("amber99sb.xml")
    modeller = app.Modeller(fixer.topology, fixer.positions)
    outside = random.getstate()  # Modeller starts new hydrogens at random.random() offsets
    random.seed(0)
    modeller.addHydrogens(forcefield, pH=7.0, platform=platform)
    random.setstate(outside)
    system = forcefield.createSystem(modeller.topology, constraints=app.HBonds)
    restraint = openmm.CustomExternalForce("0.5 * k * ((x-x0)^2 + (y-y0)^2 + (z-z0)^2)")
    stiffness = STIFFNESS_KCAL_PER_A2 * unit.kilocalories_per_mole / unit.angstroms**2
    restraint.addGlobalParameter(
        "k", stiffness.value_in_unit(unit.kilojoules_per_mole / unit.nanometers**2)
    )
    for name in ("x0", "y0", "z0"):
        restraint.addPerParticleParameter(name)
    positions = modeller.positions
    for index, atom in enumerate(modeller.topology.atoms()):
        if atom.element is not None and atom.element.symbol != "H":
            restraint.addParticle(index, positions[index].value_in_unit(unit.nanometers))
    system.addForce(restraint)

    integrator = openmm.LangevinIntegrator(0, 0.01, 0.0)
    simulation = app.Simulation(modeller.topology, system, integrator, platform, properties)
    simulation.context.setPositions(positions)
    before = simulation.context.getState(getEnergy=True, getPositions=True)
    simulation.minimizeEnergy(tolerance=TOLERANCE_KJ_PER_NM, maxIterations=max_iterations)
    after = simulation.context.getState(getEnergy=True, getPositions=True)

    start_xyz = before.getPositions(asNumpy=True).value_in_unit(unit.angstroms)
    end_xyz = after.getPositions(asNumpy=True).value_in_unit(unit.angstroms)
    heavy = np.array([a.element.symbol != "H" for a in modeller.topology.atoms()])
    moved = np.sqrt(((end_xyz - start_xyz) ** 2).sum(-1))[heavy]
    out = io.StringIO()
    # writeFile's header stamps today's date, so a rerun on another day would differ
    app.PDBFile.writeModel(simulation.topology, after.getPositions(), out, keepIds=True)
    app.PDBFile.writeFooter(simulation.topology, out)
    info = {
        "energy_before_kcal_mol": before.getPotentialEnergy().value_in_unit(
            unit.kilocalories_per_mole
        ),
        "energy_after_kcal_mol": after.getPotentialEnergy().value_in_unit(
            unit.kilocalories_per_mole
        ),
        "heavy_atom_rmsd_to_unrelaxed": float(np.sqrt((moved**2).mean())),
        "max_heavy_atom_shift": float(moved.max()),
        "platform": platform.getName(),
    }
    remarks = [line for line in pdb_text.splitlines() if line.startswith("REMARK")]
    remarks.append(
        "REMARK   1 relaxed: Amber99sb (OpenMM), heavy atoms restrained, hydrogens added"
    )
    body = "\n".join([*remarks, _with_bfactors(out.getvalue(), plddt).rstrip("\n")]) + "\n"
    return body, info


def _bfactors_by_residue(pdb_text: str) -> dict[tuple[str, int], float]:
    values = {}
    for line in pdb_text.splitlines():
        if line.startswith("ATOM"):
            values.setdefault((line[21], int(line[22:26])), float(line[60:66]))
    return values


def _with_bfactors(pdb_text: str, bfactors: dict[tuple[str, int], float]) -> str:
    lines = []
    for line in pdb_text.splitlines():
        if line.startswith(("ATOM", "HETATM")) and len(line) >= 66:
            value = bfactors.get((line[21], int(line[22:26])), 0.0)
            line = f"{line[:60]}{value:>6.2f}{line[66:]}"
        lines.append(line)
    return "\n".join(lines) + "\n"
