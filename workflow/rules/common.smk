import sys
from pathlib import Path

from snakemake.utils import validate

# The Snakefile imports warpbio from this checkout, as the job scripts do
# (workflow/scripts/_bootstrap.py): workflow and package never differ in version.
PACKAGE_SRC = str(Path(workflow.basedir).parent / "src")
if PACKAGE_SRC not in sys.path:
    sys.path.insert(0, PACKAGE_SRC)

from warpbio.config import (
    ConfigError,
    check_input_paths,
    load_schema,
    validate_config,
)
from warpbio.device import DeviceError, resolve_backend

SCHEMA = str(Path(workflow.basedir) / "schemas" / "config.schema.yaml")
WORKFLOWS = ("singlecell", "genotype", "ecg", "fold")
NOT_YET_IMPLEMENTED = ("ecg",)


def fail(message):
    """Stop at parse time with one line; no job has started."""
    sys.exit(f"warpbio: {message}")


try:
    validate_config(config, load_schema(SCHEMA))
except ConfigError as error:
    fail(str(error))
validate(config, SCHEMA)  # fills the schema's defaults


def enabled(name):
    return bool(config[name]["enabled"])


for name in NOT_YET_IMPLEMENTED:
    if config[name]["enabled"]:
        fail(
            f"config key '{name}.enabled' = True: the {name} workflow is not in "
            "this release yet; set it to false"
        )

INPUT_FILES = []  # (config key, path) of every file the enabled workflows read
if enabled("singlecell") and config["singlecell"]["source"] == "files":
    if not config["singlecell"]["samples"]:
        fail(
            "config key 'singlecell.samples' is empty but singlecell.source is "
            "'files'; list samples as {name: path.h5ad} or use source: simulate"
        )
    INPUT_FILES += [
        (f"singlecell.samples.{sample}", path)
        for sample, path in config["singlecell"]["samples"].items()
    ]
if enabled("genotype") and config["genotype"]["source"] == "bed":
    bed = config["genotype"]["bed"]
    if not bed.endswith(".bed"):
        fail(
            f"config key 'genotype.bed' = {bed!r} must name a PLINK .bed file "
            "(with .bim and .fam beside it)"
        )
    INPUT_FILES += [
        ("genotype.bed", bed[:-4] + ext) for ext in (".bed", ".bim", ".fam")
    ]
if enabled("genotype") and config["genotype"]["source"] == "vcf":
    if not config["genotype"]["vcf"]:
        fail(
            "config key 'genotype.vcf' is empty but genotype.source is 'vcf'; give its path"
        )
    INPUT_FILES.append(("genotype.vcf", config["genotype"]["vcf"]))
try:
    check_input_paths(INPUT_FILES)
except ConfigError as error:
    fail(str(error))

RESULTS = config["results"]
SINGLECELL_SOURCE_RULE = (
    "simulate" if config["singlecell"]["source"] == "simulate" else "ingest"
)


_BACKENDS = {}


def backend(name):
    """Resolved backend of a workflow (auto -> gpu|cpu on the machine that plans the DAG)."""
    if name not in _BACKENDS:
        try:
            _BACKENDS[name] = resolve_backend(config[name]["backend"])
        except DeviceError as error:
            fail(f"config key '{name}.backend': {error}")
    return _BACKENDS[name]


def gpus(name, count=1):
    """The rule's gpu resource: ``count`` on the gpu backend, 0 on cpu."""
    return count if backend(name) == "gpu" else 0


def conda_env(name):
    return f"../envs/{'gpu' if backend(name) == 'gpu' else 'cpu'}.yaml"


def mem_mb(base):
    """Memory that grows with the attempt, so a retry after OOM asks for more."""
    return lambda wildcards, attempt: base * attempt


def seed(name):
    return int(config[name]["seed"])


def log_path(name, rule_name, wildcards="{dataset}"):
    return f"logs/{name}/{rule_name}/{wildcards}.log"


def benchmark_path(name, rule_name, wildcards="{dataset}"):
    return f"benchmarks/runs/{name}/{rule_name}/{wildcards}.tsv"


def out(name, path):
    """Output path under results/<workflow>/<dataset>/."""
    return f"{RESULTS}/{name}/{{dataset}}/{path}"


def done(name, path):
    """An output path of the configured dataset (no wildcards left)."""
    return out(name, path).format(dataset=config[name]["dataset"])


# Targets of each workflow, filled by its rules file: (path, caption) pairs.
TARGETS = {name: [] for name in WORKFLOWS}


def provenance_files():
    return [
        path
        for name in WORKFLOWS
        if enabled(name)
        for path, _ in TARGETS[name]
        if path.endswith(".provenance.json")
    ]


def final_outputs():
    paths = [path for name in WORKFLOWS if enabled(name) for path, _ in TARGETS[name]]
    return paths + [f"{RESULTS}/summary/outputs.html"]


# Input functions


def singlecell_raw(wildcards):
    """Raw counts of the dataset: simulated or ingested, by singlecell.source."""
    made = "simulated" if SINGLECELL_SOURCE_RULE == "simulate" else "ingested"
    return out("singlecell", f"{made}.h5ad").format(dataset=wildcards.dataset)


def genotype_fileset(wildcards):
    """The .bed/.bim/.fam the genotype rules read: simulated, imported or configured."""
    source = config["genotype"]["source"]
    if source == "bed":
        prefix = config["genotype"]["bed"][: -len(".bed")]
    else:
        name = {"simulate": "simulated", "msprime": "msprime", "vcf": "imported"}[
            source
        ]
        prefix = out("genotype", name).format(dataset=wildcards.dataset)
    return {ext: f"{prefix}.{ext}" for ext in ("bed", "bim", "fam")}


def genotype_pca_inputs(wildcards):
    """The QC'd genotype store, plus the simulators' population table when there is one."""
    inputs = {
        "store": out("genotype", "qc/genotypes.zarr").format(dataset=wildcards.dataset)
    }
    source = config["genotype"]["source"]
    if source in ("simulate", "msprime"):
        name = "simulated" if source == "simulate" else "msprime"
        inputs["populations"] = out("genotype", f"{name}.populations.tsv").format(
            dataset=wildcards.dataset
        )
    return inputs


def fold_msa_inputs(wildcards):
    """The targets' FASTA, plus the given MSA file or the search database."""
    msa = config["fold"]["msa"]
    inputs = {"fasta": config["fold"]["fasta"]}
    if msa["mode"] == "files":
        inputs["msa"] = msa["files"][wildcards.target]
    elif msa["mode"] in ("mmseqs2", "jackhmmer"):
        inputs["database"] = msa["database"]
    return inputs


def fold_model_outputs(wildcards, kind):
    """One file of every configured model of a target: kind pdb or json."""
    relaxed = config["fold"]["relax"]
    name = {
        "pdb": "relaxed.pdb" if relaxed else "unrelaxed.pdb",
        "json": "scores.json",
    }[kind]
    return [
        out("fold", f"{wildcards.target}/{model}/{name}").format(
            dataset=wildcards.dataset
        )
        for model in config["fold"]["models"]
    ]
