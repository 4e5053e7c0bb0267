"""Files and where they come from: writing a file atomically; a Hub repo id told apart from a local path."""

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` to write to, renamed onto it only when writing succeeded.

    A killed or failed write leaves ``path`` as it was and no temporary file. The name keeps
    ``path``'s extension (PIL and NumPy choose the format by it) and the process id (two
    processes writing the same file never share a temporary).
    """
    folder, name = os.path.split(path)
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
