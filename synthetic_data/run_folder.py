"""The run folder (DESIGN: `runs/<name>/`): one sub-folder per stage and a shared manifest.json.

A stage records its resolved config, seeds and outputs in `<stage>/stage.json` when it finishes;
a stage that finds that record, its outputs present and its config unchanged skips its work.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "torch", "torchrec", "faiss-cpu", "lightgbm", "polars", "numpy", "simpy", "transformers",
    "tokenizers", "trl", "scikit-learn", "matplotlib",
)


def config_hash(config: dict) -> str:
    """A stable hash of a resolved config (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """A short content hash of an input file, so a stage that reads it redoes its work when it changes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
            text=True, cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


class RunFolder:
    """`runs/<name>/`: stage folders, their completion records and the merged manifest."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_complete(self, stage: str, config: dict) -> bool:
        """True when `stage` finished with this exact config and all its outputs still exist."""
        record_path = self.root / stage / "stage.json"
        if not record_path.exists():
            return False
        record = json.loads(record_path.read_text())
        if record.get("config_hash") != config_hash(config):
            return False
        return all((self.root / stage / output).exists() for output in record.get("outputs", []))

    def complete(self, stage: str, config: dict, outputs: list[str], summary: dict | None = None) -> None:
        """Record that `stage` finished, then refresh the run's manifest.json."""
        record = {
            "stage": stage,
            "config": config,
            "config_hash": config_hash(config),
            "outputs": sorted(outputs),
            "summary": summary or {},
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (self.stage_dir(stage) / "stage.json").write_text(json.dumps(record, indent=2, default=str))
        self.write_manifest()

    def stage_record(self, stage: str) -> dict | None:
        path = self.root / stage / "stage.json"
        return json.loads(path.read_text()) if path.exists() else None

    def world_config(self):
        """The `WorldConfig` (synthetic_data.config) adsim generated this run's world from; None when the run has
        no world record or its world is not generated (real data: its record holds another config)."""
        from synthetic_data.config import WorldConfig
        from synthetic_data.config_io import ConfigError, from_dict

        record = self.stage_record("world")
        try:
            return None if record is None else from_dict(WorldConfig, record["config"])
        except ConfigError:
            return None

    def write_manifest(self) -> Path:
        stages = {}
        for record_path in sorted(self.root.glob("*/stage.json")):
            record = json.loads(record_path.read_text())
            stages[record["stage"]] = {
                k: record[k] for k in ("config", "config_hash", "outputs", "finished_at")
            }
        manifest = {
            "run": self.root.name,
            "git_revision": git_revision(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "stages": stages,
        }
        path = self.root / "manifest.json"
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2, default=str))
        return path
