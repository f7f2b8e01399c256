"""pointwise.files: writes land whole in a regular file, through links, and nowhere else.

Special files are made in the test's own folder (a FIFO, a socket, and a character device
node with /dev/full's numbers where the test may create one); no real /dev file is touched.
"""

from __future__ import annotations

import os
import socket
import stat

import numpy as np
import pytest

from pointwise.files import atomic_write, writable_target


def _write(path, text="new"):
    with atomic_write(path, "w") as fh:
        fh.write(text)


def _special(tmp_path, kind):
    """A special file of ``kind`` in tmp_path, and a check that it is still one."""
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
        test = stat.S_ISFIFO
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(tmp_path)  # a socket's path is limited to ~107 bytes
        try:
            sock.bind(kind)
        finally:
            os.chdir(cwd)
        sock.close()
        test = stat.S_ISSOCK
    else:  # a stand-in for /dev/full: same major/minor, in the test's folder
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except PermissionError:
            pytest.skip("creating a device node needs CAP_MKNOD")
        test = stat.S_ISCHR
    return path, lambda: test(os.lstat(path).st_mode)


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
@pytest.mark.parametrize("via_link", [False, True])
def test_special_files_are_refused_and_left_alone(tmp_path, kind, via_link):
    path, still = _special(tmp_path, kind)
    target = path
    if via_link:
        target = tmp_path / "link"
        target.symlink_to(path.name)
    with pytest.raises(ValueError, match=r"expected a regular file or a new path, but .* is a "):
        _write(target)
    assert still()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {path.name, target.name})  # and no temporary file left behind


def test_a_link_is_written_through_and_stays_a_link(tmp_path):
    (tmp_path / "real").write_text("old")
    (tmp_path / "a").symlink_to("real")
    (tmp_path / "b").symlink_to("a")  # a chain of two links
    os.chmod(tmp_path / "real", 0o600)  # a private file stays private
    _write(tmp_path / "b")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    assert (tmp_path / "real").read_text() == "new"
    assert stat.S_IMODE((tmp_path / "real").stat().st_mode) == 0o600
    (tmp_path / "dangling").symlink_to("made")  # a link to a new file creates the file
    _write(tmp_path / "dangling", "made")
    assert (tmp_path / "dangling").is_symlink() and (tmp_path / "made").read_text() == "made"


def test_a_new_file_is_shared_readable_and_a_failed_write_leaves_the_old(tmp_path):
    _write(tmp_path / "f", "one")
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "f", "w") as fh:
        fh.write("half")
        raise RuntimeError("the writer failed")
    assert (tmp_path / "f").read_text() == "one" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("case", ["folder", "link to folder", "loop", "missing folder",
                                  "file as folder", "read-only file", "read-only folder",
                                  "empty"])
def test_what_cannot_take_a_file_is_refused_with_the_reason(tmp_path, case):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("keep")
    expect: tuple[type[Exception], str]
    if case == "folder":
        path, expect = tmp_path / "dir", (IsADirectoryError, "is a folder; name a file")
    elif case == "link to folder":
        (tmp_path / "l").symlink_to("dir")
        path, expect = tmp_path / "l", (IsADirectoryError, "a link to .* is a folder")
    elif case == "loop":
        (tmp_path / "loop").symlink_to("loop")
        path, expect = tmp_path / "loop", (ValueError, "symbolic link that never reaches")
    elif case == "missing folder":
        path, expect = tmp_path / "no" / "f", (FileNotFoundError, "does not exist")
    elif case == "file as folder":
        path, expect = tmp_path / "file" / "f", (FileNotFoundError, "part of the path is a")
    elif case == "read-only file":
        os.chmod(tmp_path / "file", 0o444)
        path, expect = tmp_path / "file", (PermissionError, r"read-only \(mode 0o444\)")
    elif case == "read-only folder":
        os.chmod(tmp_path / "dir", 0o555)
        path, expect = tmp_path / "dir" / "f", (PermissionError, "folder .* is read-only")
    else:
        path, expect = "", (ValueError, "expected a file path")
    try:
        with pytest.raises(expect[0], match=expect[1]):
            _write(path)
        with pytest.raises(expect[0]):
            writable_target(path)
    finally:
        os.chmod(tmp_path / "dir", 0o755)
        os.chmod(tmp_path / "file", 0o644)
    assert (tmp_path / "file").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == []


def test_the_cli_refuses_a_fifo_and_a_device_for_png_and_json(tmp_path, capsys):
    """The commands of the report: `explain --png` at a FIFO and at a /dev/full stand-in
    exit 2 with one line, and the special file is still there."""
    pytest.importorskip("matplotlib")
    from pointwise.cli import main

    for kind in ("fifo", "chardev"):
        path, still = _special(tmp_path, kind)
        assert main(["explain", "--random", "3x3x2", "--png", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "expected a regular file or a new path" in err
        assert still()


def test_checkpoints_write_through_a_link(tmp_path):
    torch = pytest.importorskip("torch")
    from pointwise.training import checkpoint as ck

    (tmp_path / "store").mkdir()
    (tmp_path / "checkpoint.pt").symlink_to("store/c.pt")
    ck.save(tmp_path / "checkpoint.pt", {"w": torch.ones(2)})
    assert (tmp_path / "checkpoint.pt").is_symlink()
    assert np.array_equal(ck.load(tmp_path / "store" / "c.pt")["w"].numpy(), [1, 1])
