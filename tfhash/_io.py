"""File writing that never leaves a half-written file behind, with the permissions any file the user
writes would get (temporary files start private; they are opened to the umask before they are renamed)."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, NamedTuple, Optional


def current_umask():
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def honour_umask(path):
    """Gives ``path`` (a file, or a directory tree) the modes a plain ``open`` / ``mkdir`` would have given it."""
    mask = current_umask()
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def write_bytes_atomically(path, payload, mode="wb", replace=True):
    """Writes ``payload`` to a temporary file beside ``path``, then renames it into place (see
    :func:`write_new_file` for ``replace=False``)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(payload)
        honour_umask(tmp)
        write_new_file(tmp, path, replace)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomically(path, payload):
    """Writes ``payload`` as JSON to a temporary file beside ``path``, then renames it into place."""
    write_bytes_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=float), mode="w")


def read_json_file(path, purpose):
    """The JSON value of the file at ``path``; a file that is not JSON is a ValueError naming it and what it is
    for (``purpose``)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not valid JSON ({err}); {purpose}.") from err


def check_target_path(path, name):
    """``path`` as a string, after refusing targets that a write must never replace.

    An empty path (an unset variable) resolves to the working directory; the working directory, its
    ancestors, the home directory and the root hold the user's work, whatever they contain.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ValueError(f"`{name}` must be a path (str or os.PathLike), got {type(path).__name__} {path!r}.")
    path = os.fsdecode(os.fspath(path))
    if not path.strip():
        raise ValueError(f"`{name}` must name a path to write, got an empty path {path!r} (an unset variable?); "
                         "it would resolve to the working directory.")
    target = os.path.realpath(path)
    home = os.path.realpath(os.path.expanduser("~"))
    for protected, what in ((os.path.realpath(os.getcwd()), "the working directory"), (home, "the home directory")):
        if os.path.commonpath([target, protected]) == target:
            relation = "is" if target == protected else "is an ancestor of"
            raise ValueError(f"`{name}` {path!r} {relation} {what} ({target}); writing there would replace "
                             "the files in it. Name a new directory or file inside it.")
    return path


class Replaceable(NamedTuple):
    """What ``overwrite=True`` may replace: ``kind`` names it ("a previous export") and ``refusal(path)`` says why
    a directory is not one (or returns None when it is). Each writer states this once, for both checks: before
    the work starts and again when the finished directory takes the old one's place."""

    kind: str
    refusal: Callable[[str], Optional[str]]


def check_directory_target(path, overwrite, replaceable):
    """``path`` (see :func:`check_target_path`) for a directory written whole: new, empty, or, with ``overwrite``,
    a directory that ``replaceable`` (a :class:`Replaceable`) finds nothing against."""
    path = check_target_path(path, "path")
    if os.path.isfile(path):
        raise ValueError(f"`path` must be a directory to create, got an existing file {path!r}.")
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise ValueError(f"`path` {path!r} exists and is not empty; pass overwrite=True to replace "
                             f"{replaceable.kind}.")
        reason = replaceable.refusal(path)
        if reason:
            raise ValueError(f"`path` {path!r} {reason}; overwrite=True only replaces {replaceable.kind} holding "
                             "nothing else. Choose another path.")
    return path


def write_new_file(tmp, path, replace):
    """Moves the finished file ``tmp`` to ``path``. Without ``replace``, an existing ``path`` is an error, and of
    writers racing for one new path exactly one succeeds (a hard link never replaces its target)."""
    if replace:
        os.replace(tmp, path)
        return
    taken = FileExistsError(f"`path` {path!r} exists (another writer may have created it meanwhile); nothing was "
                            "replaced.")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise taken from None
    except OSError:  # no hard links on this file system: claim the name exclusively, then rename over it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise taken from None
        os.replace(tmp, path)
        return
    os.remove(tmp)


def place_directory(tmp, path, replaceable=None):
    """Renames the finished directory ``tmp`` to ``path``.

    A ``path`` that does not exist or is an empty directory is taken by one atomic rename, which fails when
    another writer filled it first: of writers racing for one path exactly one succeeds. With ``replaceable``
    (a :class:`Replaceable`), an existing ``path`` is replaced only when nothing is found against it once it
    is moved aside (so nothing written into it meanwhile is lost); the old directory is then removed.
    """
    try:
        os.rename(tmp, path)
        return
    except OSError as err:
        if replaceable is None or not os.path.isdir(path):
            raise FileExistsError(f"`path` {path!r} exists and is not empty (another writer may have created it "
                                  f"meanwhile); nothing was replaced ({err.strerror}).") from None
    old = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.old-")
    os.rmdir(old)
    os.rename(path, old)
    reason = replaceable.refusal(old)
    if reason:
        os.rename(old, path)
        raise FileExistsError(f"`path` {path!r} changed while it was being written and is no longer only "
                              f"{replaceable.kind} (it {reason}); nothing was replaced.")
    try:
        os.rename(tmp, path)
    except OSError:
        try:
            os.rename(old, path)  # another writer took the path meanwhile: put the old directory back if we can
        except OSError:
            shutil.rmtree(old, ignore_errors=True)  # superseded by that writer's directory
        raise FileExistsError(f"`path` {path!r} was replaced by another writer meanwhile; nothing was "
                              "written there.") from None
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path, holder):
    """Holds an advisory lock on the file ``path`` (created if missing) while the block runs: a second holder
    fails at once with ``FileExistsError`` naming ``holder``. The lock goes with the process, so a killed
    holder leaves nothing that blocks the next one."""
    handle = open(path, "a+")  # held for the whole block
    try:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"another {holder} is running (it holds {path!r}); nothing was written.") from None
        yield
    finally:
        handle.close()
