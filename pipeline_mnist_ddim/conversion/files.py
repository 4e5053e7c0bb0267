"""Files and where they come from: writing a file atomically; a Hub repo id told apart from a local path; an output
location checked before any slow work."""

import contextlib
import hashlib
import os
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` to write to, renamed onto it only when writing succeeded.

    A killed or failed write leaves ``path`` as it was and no temporary file. The name keeps
    ``path``'s extension (PIL and NumPy choose the format by it) and the process id (two
    processes writing the same file never share a temporary). It is short whatever ``path``'s
    name is: a 255-byte name, legal, must not make the temporary's too long.
    """
    folder, name = os.path.split(path)
    if len(os.fsencode(name)) > 200:
        stem, extension = os.path.splitext(name)
        digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:12]  # names cut alike stay apart
        name = f"{stem[:32]}-{digest}{extension[:16]}"
    temporary = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def is_hub_id(source: str) -> bool:
    """Whether ``source`` names a Hub repo: no such local path, and a valid repo id ('name' or 'user/name')."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if os.path.exists(source):
        return False
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def check_writable_location(path: str, what: str = "output folder", error: type = ValueError) -> None:
    """Fails now, before any slow work, when the folder ``path`` could not be created or written."""
    if not path or not path.strip():
        raise error(f"the {what} is empty (an unset variable?): name a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise error(f"cannot write the {what} {path}: it is a file, not a folder")
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        if os.path.islink(ancestor):  # makedirs would fail on it after the work: refuse it now
            raise error(
                f"cannot create the {what} {path}: {ancestor} is a symbolic link to nothing (dangling or a loop)"
            )
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise error(f"cannot create the {what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise error(f"cannot write the {what} {path}: {ancestor} is not writable")
    check_name_lengths(path, what, error)


def check_name_lengths(path: str, what: str = "output folder", error: type = ValueError) -> None:
    """Refuses a path whose names or length the file system cannot store: found now, not as "File name too
    long" after the work. The limits are those of the nearest existing folder's file system."""
    ancestor = os.path.abspath(path)
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    try:
        name_max, path_max = os.pathconf(ancestor, "PC_NAME_MAX"), os.pathconf(ancestor, "PC_PATH_MAX")
    except (OSError, ValueError):  # not answered here: the usual Linux limits
        name_max, path_max = 255, 4096
    full = os.fsencode(os.path.abspath(path))
    shown = path if len(path) <= 120 else f"{path[:60]}...{path[-40:]}"
    if len(full) >= path_max:
        raise error(
            f"cannot create the {what} {shown}: the path is {len(full)} bytes long, the limit here is {path_max - 1}"
        )
    for part in full.split(b"/"):
        if len(part) > name_max:
            raise error(
                f"cannot create the {what} {shown}: the name {os.fsdecode(part[:40])}... is {len(part)} bytes long, "
                f"the limit here is {name_max}"
            )
