"""Stage 4, reports: result records in, text out (text, Markdown, JSON, CSV, LaTeX tables).

Reports only format what analysis computed; they never compute costs."""
from .jsonout import json_text, to_dict
from .tables import csv_table, markdown, text

FORMATS = {"text": text, "markdown": markdown, "json": json_text, "csv": csv_table}

__all__ = ["FORMATS", "to_dict"]
