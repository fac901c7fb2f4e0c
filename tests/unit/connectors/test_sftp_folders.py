"""Remote folders are made once even when two workers race to make them."""
import pytest

from connectors.sftp import make_dirs


class FakeSftp:
    """Folders that exist; `made_by_other` appear between this worker's stat and its mkdir."""

    def __init__(self, existing: set[str], made_by_other: set[str] = frozenset()) -> None:
        self.existing, self.made_by_other, self.made = set(existing), set(made_by_other), []

    def stat(self, path: str):
        if path in self.made_by_other and path not in self.existing:
            self.existing.add(path)  # the other worker's mkdir lands right after our stat
            raise FileNotFoundError(path)
        if path not in self.existing:
            raise FileNotFoundError(path)
        return object()

    def mkdir(self, path: str) -> None:
        if path in self.existing:
            raise IOError(f"{path}: Failure")  # what OpenSSH answers when the folder exists
        if path.startswith("/locked"):
            raise PermissionError(path)
        self.existing.add(path)
        self.made.append(path)


def test_missing_folders_are_made_from_the_top():
    sftp = FakeSftp({"/in"})
    make_dirs(sftp, "/in/run/dest")
    assert sftp.made == ["/in/run", "/in/run/dest"]


def test_a_folder_another_worker_made_meanwhile_is_not_an_error():
    sftp = FakeSftp({"/in"}, made_by_other={"/in/run"})
    make_dirs(sftp, "/in/run/dest")
    assert sftp.made == ["/in/run/dest"]


def test_a_folder_that_cannot_be_made_keeps_its_error():
    with pytest.raises(PermissionError):
        make_dirs(FakeSftp(set()), "/locked/run")
