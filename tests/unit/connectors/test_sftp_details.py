"""SFTP details: remote folders made once by racing workers, pipelined writes all confirmed."""
import pytest

from audience_relay.connectors.destinations.sftp.client import make_dirs


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


class FakeHandle:
    def __init__(self, requests):
        from collections import deque

        self._reqs, self.flushed = deque(requests), False

    def flush(self):
        self.flushed = True


class FakeAnswers:
    """Answers pipelined writes in order; `failing` ones with an error status."""

    def __init__(self, failing=()):
        self.failing, self.answered = set(failing), []

    def _read_response(self, request):
        from paramiko.sftp import CMD_STATUS

        self.answered.append(request)
        if request in self.failing:
            raise IOError("Failure")
        return CMD_STATUS, None


def test_every_outstanding_write_is_confirmed_after_the_last_flush():
    from audience_relay.connectors.destinations.sftp.client import confirm_pipelined_writes

    handle, answers = FakeHandle([1, 2, 3]), FakeAnswers()
    confirm_pipelined_writes(answers, handle)
    assert handle.flushed and answers.answered == [1, 2, 3] and not handle._reqs


def test_a_failed_write_late_in_the_file_raises():
    from audience_relay.connectors.destinations.sftp.client import confirm_pipelined_writes

    with pytest.raises(IOError):
        confirm_pipelined_writes(FakeAnswers(failing={3}), FakeHandle([1, 2, 3]))
