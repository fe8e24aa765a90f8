"""Write docs/outputs.md from traitpipe/store/schemas.py (tests/test_store.py keeps the two equal).

Usage: python scripts/write_outputs_doc.py
"""

from pathlib import Path

from traitpipe.store.schemas import outputs_markdown

if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
    target.write_text(outputs_markdown())
    print(f"{target}: written from traitpipe/store/schemas.py")
