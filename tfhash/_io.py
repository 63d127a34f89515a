"""File writing that never leaves a half-written file behind, with the permissions any file the user
writes would get (temporary files start private; they are opened to the umask before they are renamed)."""

import json
import os
import tempfile


def current_umask():
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def honour_umask(path):
    """Gives ``path`` (a file, or a directory tree) the modes a plain ``open`` / ``mkdir`` would have given it."""
    mask = current_umask()
    if os.path.isdir(path):
        for root, directories, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def write_bytes_atomically(path, payload, mode="wb"):
    """Writes ``payload`` to a temporary file beside ``path``, then renames it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(payload)
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomically(path, payload):
    """Writes ``payload`` as JSON to a temporary file beside ``path``, then renames it into place."""
    write_bytes_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=float), mode="w")
