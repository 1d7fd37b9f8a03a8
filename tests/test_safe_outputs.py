"""Output safety: --overwrite replaces only a distilled set, output paths are checked before any work,
and concurrent runs on one folder lose nothing (locks).

Every refused case asserts exit status 2, exactly one stderr line starting with ``error:``, no
traceback, and an unchanged tree (a checksum of every file and folder under the test's folder).

Tests run as root here, and root passes ``chmod``-based read-only checks, so "read-only folder"
cases are tested three ways, each honest about what it proves: a path under a regular *file* (no
user can create it; the real failure, end to end), ``os.access`` denying writes to the folder (our
check and its message, for a folder a non-root user may not write), and, when not run as root, a
real ``chmod 0555`` folder.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import one_error_line, tree_digest, write_image_dataset

from distilkit.cli import audit, bench, cli, distill, evaluate, experts, import_  # noqa: F401  (register commands)
from distilkit.outputs import FolderLock, lock_path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def make_set(folder: Path, real) -> Path:
    """A 10-image distilled set (1 per class) of the embedded source, saved with ``DistilledSet.save``."""
    from distilkit.data.pixel_space import PixelSpace
    from distilkit.data.sources import SourceConfig
    from distilkit.distilled import DistilledSet

    idx = torch.cat([torch.nonzero(real.train_labels == c).flatten()[:1] for c in range(len(real.class_names))])
    space = PixelSpace("normalized", [0.2860], [0.3530])
    DistilledSet(images=space.from_uint8(real.train_images[idx]), labels=real.train_labels[idx],
                 class_names=real.class_names, pixel_space=space, method="random", ipc=1,
                 config={"method": "random", "ipc": 1, "source": SourceConfig().__dict__}, source=real.info,
                 provenance={"seed": 0, "distilkit_version": "test", "preset": "smoke"}).save(folder)
    return folder


@pytest.fixture
def workspace(tmp_path, embedded_real):
    """A folder with a distilled set, a real source folder, a non-set folder and a regular file."""
    make_set(tmp_path / "set", embedded_real)
    write_image_dataset(tmp_path / "parent" / "src", n_per_class=3, size=8)
    (tmp_path / "notaset").mkdir()
    (tmp_path / "notaset" / "keep.txt").write_text("precious")
    (tmp_path / "afile").write_text("a file")
    return tmp_path


DISTILL = ("distill", "--method", "random", "--preset", "smoke", "--ipc", "1")


def _cases(w: Path) -> list[tuple[tuple, tuple]]:
    src, parent = w / "parent" / "src", w / "parent"
    return [
        # --overwrite never replaces what is not a distilled set, the source, or a folder around/inside it
        ((*DISTILL, "--out", w / "notaset", "--overwrite"), ("not one", "notaset")),
        ((*DISTILL, "--source", src, "--out", src, "--overwrite"), ("is the source",)),
        ((*DISTILL, "--source", src, "--out", parent, "--overwrite"), ("contains the source",)),
        ((*DISTILL, "--source", src, "--out", w, "--overwrite"), ("contains the source",)),
        ((*DISTILL, "--out", w / "afile", "--overwrite"), ("is a file",)),
        # output paths that cannot be written, refused before the data is loaded
        ((*DISTILL, "--out", w / "afile"), ("afile",)),
        ((*DISTILL, "--out", w / "afile" / "set"), ("is a file",)),
        (("bench", "--methods", "random", "--ipc", "1", "--preset", "smoke", "--runs", "1", "--out", w / "afile"),
         ("is a file",)),
        (("bench", "--methods", "random", "--ipc", "1", "--preset", "smoke", "--out", w / "afile" / "b"),
         ("is a file",)),
        (("experts", "--preset", "smoke", "--out", w / "afile"), ("--out",)),
        (("experts", "--preset", "smoke", "--out", w / "afile" / "experts"), ("is a file",)),
        (("experts", "--preset", "smoke", "--out", w / "notaset"), ("not empty",)),
        # import: never replaces the folder it reads, checks --out before reading anything
        (("import", src, "--source", "embedded", "--out", src, "--overwrite"), ("is the source",)),
        (("import", src, "--source", "embedded", "--out", w / "afile" / "set"), ("is a file",)),
    ]


CASE_IDS = ["overwrite-non-set", "overwrite-source", "overwrite-parent-of-source", "overwrite-grandparent",
            "overwrite-file", "out-file", "out-under-file", "bench-out-file", "bench-out-under-file",
            "experts-out-file", "experts-out-under-file", "experts-out-not-empty", "import-overwrite-input",
            "import-out-under-file"]


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_refused_outputs_change_nothing(workspace, case):
    from distilkit.cache import cache_dir

    args, needles = _cases(workspace)[case]
    experts_cache = cache_dir() / "experts"
    trained_before = sorted(experts_cache.rglob("*")) if experts_cache.exists() else []
    before = tree_digest(workspace)
    started = time.perf_counter()
    one_error_line(run_cli(*args), *needles)
    assert tree_digest(workspace) == before
    # refused up front: nothing was trained (experts) and no data was loaded (seconds, not a run)
    assert (sorted(experts_cache.rglob("*")) if experts_cache.exists() else []) == trained_before
    assert time.perf_counter() - started < 30


def test_overwrite_inside_the_source_is_refused_even_for_a_set(workspace, embedded_real):
    """A distilled set stored inside the source folder is not replaced by a run that reads that source."""
    src = workspace / "parent" / "src"
    make_set(src / "old-set", embedded_real)
    before = tree_digest(workspace)
    one_error_line(run_cli(*DISTILL, "--source", src, "--out", src / "old-set", "--overwrite"), "inside the source")
    one_error_line(run_cli(*DISTILL, "--source", src / "data", "--out", src, "--overwrite"), "contains the source")
    assert tree_digest(workspace) == before


def test_overwrite_replaces_a_distilled_set(workspace):
    out = workspace / "set"
    result = run_cli(*DISTILL, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not lock_path(out).exists()  # the lock goes with the run
    assert sorted(p.name for p in workspace.iterdir() if p.name.startswith(".")) == []


def test_library_save_overwrites_only_sets(workspace, embedded_real):
    from distilkit.distilled import DistilledSet
    from distilkit.errors import DistilkitError

    dset = DistilledSet.load(workspace / "set")
    before = tree_digest(workspace)
    for target in ("notaset", "afile"):
        with pytest.raises(DistilkitError, match="only a distilled set"):
            dset.save(workspace / target, overwrite=True)
    assert tree_digest(workspace) == before
    dset.save(workspace / "set", overwrite=True)


def _deny_writes_to(monkeypatch, folder: Path) -> None:
    """``os.access`` says ``folder`` takes no new files (what a read-only folder tells a non-root user)."""
    real_access = os.access
    denied = os.path.abspath(folder)

    def access(path, mode, *args, **kwargs):
        if os.path.abspath(path) == denied and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("command", ["distill", "experts", "bench", "evaluate", "audit"])
def test_read_only_output_folder_is_refused_before_any_work(workspace, monkeypatch, command):
    """What this proves: each command asks whether its output folder takes new files before it loads
    data or trains (``os.access``), and turns a "no" into one line; the real permission failure is
    covered by test_refused_outputs_change_nothing (a path under a file) and, for non-root users, by
    test_chmod_read_only_folder."""
    ro = workspace / "ro"
    ro.mkdir()
    args = {
        "distill": (*DISTILL, "--out", ro / "new-set"),
        "experts": ("experts", "--preset", "smoke", "--out", ro / "experts"),
        "bench": ("bench", "--methods", "random", "--ipc", "1", "--preset", "smoke", "--out", ro / "bench"),
        "evaluate": ("evaluate", workspace / "set", "--runs", "1", "--preset", "smoke"),
        "audit": ("audit", workspace / "set", "--only", "pixels", "--preset", "smoke"),
    }[command]
    denied = workspace / "set" if command in ("evaluate", "audit") else ro
    _deny_writes_to(monkeypatch, denied)
    from distilkit.data import sources

    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the output folder was checked")

    for module in ("distilkit.pipeline", "distilkit.evaluate"):  # every loader of real data (imports them first)
        monkeypatch.setattr(f"{module}.load_real", no_loading)
    monkeypatch.setattr(sources, "load_real", no_loading)
    before = tree_digest(workspace)
    one_error_line(run_cli(*args), "not writable")
    assert tree_digest(workspace) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0555 folder; see the os.access test")
def test_chmod_read_only_folder(workspace):
    ro = workspace / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        before = tree_digest(workspace)
        one_error_line(run_cli(*DISTILL, "--out", ro / "new-set"), "not writable")
        assert tree_digest(workspace) == before
    finally:
        ro.chmod(0o755)


def test_failed_final_write_says_where_the_checkpoint_is(tmp_path, monkeypatch):
    """A disk-full error while the finished set is written (simulated: the parquet write raises ENOSPC)."""
    from distilkit.distilled import DistilledSet
    from distilkit.pipeline import checkpoint_dir

    def disk_full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DistilledSet, "to_dataset", disk_full)
    out = tmp_path / "dm-set"
    result = run_cli("distill", "--method", "dm", "--preset", "smoke", "--ipc", "1", "--arg", "iterations=3",
                     "--arg", "checkpoint_every=1", "--out", out)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line]  # (the run's progress bar precedes it)
    assert len(errors) == 1 and errors[0].startswith("error: ") and result.stderr.rstrip().endswith(errors[0])
    line = errors[0]
    assert "No space left" in line and "--resume" in line
    assert str(checkpoint_dir(out)) in line
    assert (checkpoint_dir(out) / "state.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_dir(out).name]  # no half-written set, no lock


# ------------------------------------------------------------------------------------------- locks
def test_distill_refuses_an_output_another_run_is_writing(tmp_path):
    """Two ``distill`` runs on one --out with checkpointing: the second fails at once with one line
    naming the lock; a killed holder leaves no stale lock (the kernel drops a flock with its process)."""
    out = tmp_path / "dm-set"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "distilkit", "distill", "--method", "dm", "--preset", "smoke",
                              "--ipc", "1", "--arg", "iterations=100000", "--arg", "checkpoint_every=1",
                              "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (lock_path(out).is_file() and b"distill" in lock_path(out).read_bytes()):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        before = tree_digest(tmp_path)
        line = one_error_line(run_cli(*DISTILL, "--out", out), "in use by another distilkit run", str(lock_path(out)),
                       f"pid {first.pid}")
        assert "distilkit distill" in line
        one_error_line(run_cli(*DISTILL, "--out", out, "--resume"), "in use")
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    del before  # the first run kept writing its checkpoint meanwhile; what matters is that it was not disturbed
    with FolderLock(out, "test"):  # free again although the killed run's lock file is still there
        pass


@pytest.fixture
def audited_set(tmp_path, embedded_real):
    return make_set(tmp_path / "set", embedded_real)


PROBE_AUDIT = """
import sys
from distilkit.audit._registry import AuditResult, Table, register_audit

@register_audit("probe", question=2, summary="test probe", defaults={})
def probe(dset, real, cfg, ctx):
    return AuditResult(summary={"n": int(dset.images.shape[0])}, verdict="probe ran.",
                       tables=[Table("probe", ["n"], [[int(dset.images.shape[0])]])])

from distilkit.cli import main
sys.argv = ["distilkit", *sys.argv[1:]]
main()
"""


def test_two_audits_at_once_both_land_in_the_report_and_card(audited_set):
    """Two ``audit`` processes on one set with different --only: each waits for the lock before merging
    and re-reads report.json and the card under it, so neither result is lost. The test holds the lock
    until both processes are waiting, so their merges are sure to meet."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DISTILKIT_LOCK_TIMEOUT": "300"}
    commands = [[sys.executable, "-m", "distilkit", "audit", str(audited_set), "--only", "pixels", "--preset", "smoke"],
                [sys.executable, "-c", PROBE_AUDIT, "audit", str(audited_set), "--only", "probe", "--preset", "smoke"]]
    waiting = [threading.Event(), threading.Event()]
    stderr: list[list[str]] = [[], []]

    def watch(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            stderr[i].append(line)
            if line.startswith("waiting for"):
                waiting[i].set()

    with FolderLock(audited_set, "test"):
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for cmd in commands]
        watchers = [threading.Thread(target=watch, args=(i, p), daemon=True) for i, p in enumerate(procs)]
        for thread in watchers:
            thread.start()
        for i, proc in enumerate(procs):
            deadline = time.monotonic() + 240
            while not waiting[i].is_set():
                assert proc.poll() is None, "".join(stderr[i])[-2000:]
                assert time.monotonic() < deadline, "an audit never reached the lock"
                time.sleep(0.2)
        assert "test" in lock_path(audited_set).read_text()
    for i, proc in enumerate(procs):
        proc.wait(timeout=120)
        watchers[i].join(timeout=10)
        assert proc.returncode == 0, "".join(stderr[i])[-2000:]
    report = json.loads((audited_set / "audit" / "report.json").read_text())
    assert set(report["audits"]) == {"pixels", "probe"}
    card = (audited_set / "README.md").read_text()
    import yaml

    assert set(yaml.safe_load(card.split("---")[1])["distilkit"]["audits"]) == {"pixels", "probe"}
    assert "#### `pixels`" in card and "#### `probe`" in card
    assert not lock_path(audited_set).exists()


def test_audit_gives_up_on_a_held_lock_with_one_line(audited_set, monkeypatch):
    """With DISTILKIT_LOCK_TIMEOUT=0 an audit whose set is locked stops with one line naming the lock;
    the report and the card are as they were (the audit's own figure may have been written)."""
    monkeypatch.setenv("DISTILKIT_LOCK_TIMEOUT", "0")
    card = (audited_set / "README.md").read_bytes()
    with FolderLock(audited_set, "test"):
        one_error_line(run_cli("audit", audited_set, "--only", "pixels", "--preset", "smoke"),
                "in use by another distilkit run", str(lock_path(audited_set)))
    assert (audited_set / "README.md").read_bytes() == card
    assert not (audited_set / "audit" / "report.json").exists()


def test_bad_lock_timeout_is_one_line(audited_set, monkeypatch):
    monkeypatch.setenv("DISTILKIT_LOCK_TIMEOUT", "soon")
    before = tree_digest(audited_set.parent)
    one_error_line(run_cli("audit", audited_set, "--only", "pixels", "--preset", "smoke"), "DISTILKIT_LOCK_TIMEOUT")
    assert tree_digest(audited_set.parent) == before
