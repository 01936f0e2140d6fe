import os
import re
import sys
from pathlib import Path

from snakemake.caching import LOCATION_ENVVAR as OUTPUT_CACHE_VARIABLE
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
from warpbio.ecg.io import EcgInputError, SheetRow, read_sample_sheet, wfdb_record_path
from warpbio.provenance import source_digest

SCHEMA = str(Path(workflow.basedir) / "schemas" / "config.schema.yaml")
WORKFLOWS = ("singlecell", "genotype", "ecg", "fold")


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


# Retries and between-workflow caching


def attempt_number(wildcards, attempt):
    """Resource ``attempt``: a step reads it as ctx.attempt and shrinks its chunks."""
    return attempt


def code(*modules):
    """Param: digest of the warpbio code behind a rule (its scripts are thin), so
    that the between-workflow cache key and the params trigger see code changes."""
    return source_digest(*modules)


# snakemake --cache: Snakemake reads the location from $SNAKEMAKE_OUTPUT_CACHE when
# it builds the DAG (after this file is parsed); config output_cache fills it in.
if workflow.workflow_settings.cache is not None and not os.environ.get(
    OUTPUT_CACHE_VARIABLE
):
    OUTPUT_CACHE = Path(os.path.expandvars(config["output_cache"])).expanduser()
    OUTPUT_CACHE.mkdir(parents=True, exist_ok=True)
    os.environ[OUTPUT_CACHE_VARIABLE] = str(OUTPUT_CACHE.resolve())


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


# ECG: recordings (simulated or from the sample sheet), known at parse time


def ecg_sheet_rows():
    """Recording id -> sample-sheet row (as a dict), known at parse time."""
    if config["ecg"]["source"] == "simulate":
        simulated = SheetRow(
            recording="synthetic",
            path=done("ecg", "simulated/synthetic.csv"),
            format="csv",
            fs=float(config["ecg"]["simulate"]["fs"]),
            lead="MLII",
            annotations=done("ecg", "simulated/synthetic.annotations.tsv"),
        )
        return {simulated.recording: vars(simulated)}
    sheet = config["ecg"]["samples"]
    if not sheet:
        fail(
            "config key 'ecg.samples' is empty but ecg.source is 'sheet'; give a TSV "
            "sample sheet (recording, path, format, fs, lead, annotations) or use "
            "source: simulate"
        )
    try:
        rows = read_sample_sheet(sheet)
    except EcgInputError as error:
        fail(f"config key 'ecg.samples': {error}")
    return {row.recording: vars(row) for row in rows}


ECG_ROWS = ecg_sheet_rows() if enabled("ecg") else {}
ECG_RECORDINGS = sorted(ECG_ROWS)
ECG_SETTINGS = {
    key: config["ecg"][key] for key in ("filter", "peaks", "beats", "label_tolerance_s")
}


def ecg_recording_files(wildcards):
    """Files one recording is read from: its data, header and annotations."""
    row = SheetRow(**ECG_ROWS[wildcards.recording])
    files = row.input_files()
    if row.format == "wfdb":
        import wfdb

        record = wfdb_record_path(row.path)
        folder = Path(record).parent
        files += [str(folder / name) for name in set(wfdb.rdheader(record).file_name)]
        if row.annotations:
            files.append(f"{record}.{row.annotations}")
    return files


def ecg_per_recording(path):
    return expand(out("ecg", path), recording=ECG_RECORDINGS, allow_missing=True)


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


def fold_per_target(name):
    """A file of every fold target (the batch rule's inputs); FOLD_TARGETS is set
    in fold.smk before any rule calls this."""
    return [out("fold", f"{target}/{name}") for target in FOLD_TARGETS]


def fold_per_model(name):
    """A file of every target and model, target-major (the batch rule's outputs)."""
    return [
        out("fold", f"{target}/{model}/{name}")
        for target in FOLD_TARGETS
        for model in config["fold"]["models"]
    ]


def fold_inference_params():
    """params.inference of fold_predict and fold_predict_batch (one meaning for both)."""
    fold = config["fold"]
    return {
        **fold["inference"],
        "num_recycle": fold["num_recycle"],
        # the old top-level fold.chunk_size, while inference.chunk_size is 0
        "chunk_size": fold["inference"]["chunk_size"] or fold["chunk_size"],
    }
