from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MITDB = REPO.parent / "shared" / "data" / "ecg" / "mitdb" / "100"
