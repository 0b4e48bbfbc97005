import os
import tempfile
from pathlib import Path

import pytest

# The persistent compile cache (costdsl.analysis.compiled) of this test run lives in a fresh
# private directory, never the user's own; tests that check the cache set their own.
os.environ["COSTDSL_CACHE"] = tempfile.mkdtemp(prefix="costdsl-test-cache-")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
MODELS = ROOT / "models"


@pytest.fixture
def write_arch(tmp_path):
    """Write a .arch text to a temporary file and return its path."""
    def write(text: str, name: str = "m.arch") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write
