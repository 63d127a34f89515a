"""File writing that never leaves a half-written file behind."""

import json
import os
import tempfile


def write_json_atomically(path, payload):
    """Writes ``payload`` as JSON to a temporary file beside ``path``, then renames it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=float)
        tmp = f.name
    os.replace(tmp, path)
