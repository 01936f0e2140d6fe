"""The ecg schema's defaults are the code's defaults (one source of truth each way)."""

from dataclasses import asdict

import yaml

from warpbio.ecg.beats import BeatSettings
from warpbio.ecg.filter import FilterSettings
from warpbio.ecg.peaks import PeakSettings
from warpbio.ecg.simulate import EcgSimulationSpec
from warpbio.ecg.vae import VaeSettings

from .conftest import REPO


def schema_defaults(section: dict) -> dict:
    return {key: spec.get("default") for key, spec in section["properties"].items()}


def test_schema_defaults_match_settings():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    ecg = schema["properties"]["ecg"]["properties"]
    for key, settings in (
        ("filter", FilterSettings()),
        ("peaks", PeakSettings()),
        ("beats", BeatSettings()),
        ("vae", VaeSettings()),
    ):
        expected = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
        assert schema_defaults(ecg[key]) == expected, key
    simulate = {k: v for k, v in asdict(EcgSimulationSpec()).items() if k != "leads"}
    assert schema_defaults(ecg["simulate"]) == simulate
