"""The student's name and roll number: student.json at the project root (the packager writes it), or placeholders."""
import json
from pathlib import Path

PLACEHOLDER = {"name": "FirstName", "roll_number": "RollNumber"}


def identity(path: Path = Path(__file__).resolve().parent.parent / "student.json") -> dict[str, str]:
    try:
        return {k: str(json.loads(path.read_text()).get(k) or v) for k, v in PLACEHOLDER.items()}
    except (OSError, ValueError, AttributeError):
        return dict(PLACEHOLDER)
