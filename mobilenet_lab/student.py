"""The student's name and roll number, stored once in student.json at the project root.

The submission packager writes that file; ``--name`` and ``--roll-number`` override it."""
import json
from pathlib import Path

STUDENT_FILE = Path(__file__).resolve().parent.parent / "student.json"
PLACEHOLDER = {"name": "FirstName", "roll_number": "RollNumber"}


def identity(path: Path = STUDENT_FILE) -> dict[str, str]:
    """{"name": ..., "roll_number": ...} from student.json, or placeholders when it is absent or unreadable."""
    try:
        stored = json.loads(path.read_text())
        return {k: str(stored.get(k) or PLACEHOLDER[k]) for k in PLACEHOLDER}
    except (OSError, ValueError, AttributeError):
        return dict(PLACEHOLDER)
