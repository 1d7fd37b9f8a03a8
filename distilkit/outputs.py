"""Where commands write: atomic file writes, up-front checks of output paths, the ``--overwrite`` guard,
and folder locks.

Every file distilkit writes goes through :func:`atomic_path` / :func:`write_atomic`: the content goes
to a hidden temporary file beside the target, which is renamed over it only once complete, so a
reader (or a run killed mid-write) never sees a half-written file.

Every check here runs before any data is loaded or any model trained, so a bad output path costs
nothing and changes nothing:

- :func:`check_output_folder`: the folder (or the first existing folder above it) is a folder, not a
  file, and a file can be created in it (``os.access`` and, because root passes ``os.access`` on
  most file systems, a real probe file that is removed at once).
- :func:`check_replaceable`: ``--overwrite`` replaces only a distilkit set (a folder whose README.md
  YAML has a ``distilkit:`` key), never a file, never the source or a folder that contains it or that
  it contains.
- :class:`FolderLock`: an exclusive ``flock`` on a lock file beside a folder
  (``<parent>/.<name>.lock``), taken by ``distill`` for the whole run (fail fast) and by ``audit`` and
  ``evaluate`` while they merge their results into the set (waiting up to ``DISTILKIT_LOCK_TIMEOUT``
  seconds, default 120). The kernel drops a ``flock`` when its process dies, so a killed run never
  leaves a stale lock behind.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from distilkit.errors import DistilkitError
from distilkit.validation import env_number

LOCK_TIMEOUT_ENV = "DISTILKIT_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 120.0
_YAML_BLOCK = re.compile(r"\A\s*---[\r\n]+([\S\s]*?)[\r\n]+---(\r\n|\n|$)")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A new, empty temporary file beside ``path`` for the block to write ``path``'s content to.

    When the block ends normally the file is renamed over ``path`` (``os.replace``: readers see the
    old content or the new, never part of it); when it raises, the file is removed and ``path`` is
    left as it was. The temporary file is hidden (a leading dot), unique to the call (several
    processes may write the same cache file at once) and keeps ``path``'s suffix (writers such as
    matplotlib pick the format from it). The file that takes ``path``'s place has the mode any new
    file gets (0666 less the umask), also when the writer made its own (safetensors makes 0600 files).
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # another writer drew the same name: draw again
            continue
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, content: str | bytes | Callable[[Path], object]) -> None:
    """Replace ``path`` atomically (:func:`atomic_path`) by ``content``: text (written as UTF-8),
    bytes, or a writer called with the temporary path, e.g. ``lambda tmp: save_file(tensors, str(tmp))``."""
    with atomic_path(path) as tmp:
        if isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)


def is_distilkit_set(folder: Path) -> bool:
    """Whether ``folder`` holds a distilkit set: its README.md starts with YAML that has a ``distilkit`` key."""
    import yaml

    readme = Path(folder) / "README.md"
    if not Path(folder).is_dir() or not readme.is_file():
        return False
    try:
        match = _YAML_BLOCK.match(readme.read_text(encoding="utf-8"))
        data = yaml.safe_load(match.group(1)) if match else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "distilkit" in data


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(path: str | Path, what: str) -> None:
    """Refuse an output folder that cannot be written: ``path`` is a file, lies under a file, or the
    folder (or the first existing folder above it) does not accept new files. ``what`` names the
    option or argument in the message (e.g. ``--out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DistilkitError(f"{what} {path} is a file, not a folder; choose another {what}")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise DistilkitError(f"{what} {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DistilkitError(f"{what} {path} is not writable ({existing} does not allow new files)")
    try:  # root passes os.access; a read-only mount or an immutable folder does not pass this
        fd, probe = tempfile.mkstemp(prefix=".distilkit-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise DistilkitError(f"{what} {path} is not writable ({existing}: {err.strerror or err})") from None


def check_replaceable(out: str | Path, protected: list[str | Path] = ()) -> None:
    """Refuse ``--overwrite`` of anything but a distilkit set, and of the source (``protected``): an
    output folder equal to, inside, or containing a protected path is never replaced."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise DistilkitError(f"--overwrite replaces only a distilled set folder; {out} is a file")
    resolved = out.resolve()
    for item in protected:
        other = Path(item).expanduser()
        if not other.exists():
            continue
        other = other.resolve()
        if resolved == other:
            raise DistilkitError(f"--out {out} is the source {item}; --overwrite never replaces the source")
        if resolved in other.parents:
            raise DistilkitError(f"--out {out} contains the source {item}; --overwrite never replaces it")
        if other in resolved.parents:
            raise DistilkitError(f"--out {out} lies inside the source {item}; choose an --out outside it")
    if any(out.iterdir()) and not is_distilkit_set(out):
        raise DistilkitError(f"--overwrite replaces only a distilled set folder; {out} is not one (its README.md "
                             "has no 'distilkit' entry); remove it yourself or choose another --out")


def lock_path(folder: str | Path) -> Path:
    """The lock file that guards ``folder``: a hidden sibling, so it survives the folder's replacement."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


def lock_timeout() -> float:
    """Seconds ``audit``/``evaluate`` wait for a set's lock (``DISTILKIT_LOCK_TIMEOUT``, default 120)."""
    return env_number(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT)


class FolderLock:
    """An exclusive lock on ``folder`` for one process (``with FolderLock(folder, "audit"):``).

    ``wait`` seconds: how long to wait for another holder (0: fail at once). The lock file names its
    holder (pid, host, command) for the error message and is removed on release, with any folder
    that was made for it and is still empty."""

    def __init__(self, folder: str | Path, command: str, wait: float = 0.0) -> None:
        self.folder = Path(folder)
        self.path = lock_path(folder)
        self.command = command
        self.wait = wait
        self._fd: int | None = None
        self._created: list[Path] = []  # folders made for the lock file, removed again if left empty

    def __enter__(self) -> FolderLock:
        import fcntl
        import socket

        deadline = time.monotonic() + self.wait
        announced = False
        missing = self.path.parent
        while not missing.exists() and missing != missing.parent:
            self._created.append(missing)
            missing = missing.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DistilkitError(f"cannot create {self.path.parent} ({err.strerror or err})") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise DistilkitError(f"cannot lock {self.folder}: cannot create {self.path} "
                                     f"({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                if time.monotonic() >= deadline:
                    waited = f" after waiting {self.wait:g} s" if self.wait else ""
                    raise DistilkitError(
                        f"{self.folder} is in use by another distilkit run ({holder}; lock file {self.path}){waited}; "
                        f"wait for it to finish (the lock goes when its process ends), or raise {LOCK_TIMEOUT_ENV}"
                    ) from None
                if not announced:
                    print(f"waiting for {self.folder}: in use by {holder} (lock file {self.path})", file=sys.stderr)
                    announced = True
                time.sleep(0.1)
                continue
            try:  # the previous holder may have removed the file between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: distilkit {self.command}\n".encode(), 0)
            self._fd = fd
            return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
        for folder in self._created:  # deepest first; a run that failed early leaves no trace
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []
