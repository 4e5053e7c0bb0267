"""Files and where they come from: writing a file atomically; a Hub repo id told apart from a local path."""

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
