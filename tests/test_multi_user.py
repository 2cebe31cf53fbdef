"""A multi-user daemon: every job runs as its submitter, and a user acts on their own jobs only.

Each test drives a real ``ts --daemon --multi-user`` (root) through the real ``ts`` of two
throwaway users (see ``multi_user``); skipped, with the reason, where not root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from multi_user import Shared, User


def test_a_job_runs_as_its_submitter_with_their_home_and_umask(shared: Shared, alice: User) -> None:
    job = shared.submit_as(
        alice, "sh", "-c", 'id -un; id -u; id -g; echo "$HOME $USER $LOGNAME $SECRET"; umask; pwd'
    )
    assert shared.wait_state(job, "finished")["exit_code"] == 0
    out = shared.ts_as(alice, "-c", str(job)).split()
    assert out[:3] == [alice.name, str(alice.uid), str(alice.gid)]
    assert out[3:7] == [str(alice.home), alice.name, alice.name, f"secret-of-{alice.name}"]
    assert out[7:] == ["0022", str(alice.home)]
    # The log: the user's own file (0600) in the user's own directory (0700), both theirs.
    log = Path(shared.job(job)["output"])
    assert log.parent == shared.logdir / alice.name
    for path, mode in ((log, 0o600), (log.parent, 0o700)):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (alice.uid, mode), path


def test_ts_l_shows_every_users_jobs_with_their_owner(shared: Shared, alice: User, bob: User) -> None:
    a = shared.submit_as(alice, "true")
    b = shared.submit_as(bob, "true")
    listing = shared.ts_as(bob, "-l")
    assert listing.splitlines()[0].split()[:2] == ["ID", "User"]
    rows = {line.split()[0]: line.split()[1] for line in listing.splitlines()[1:]}
    assert rows == {str(a): alice.name, str(b): bob.name}
    mine = shared.ts_as(bob, "-l", "--mine", "--ids")
    assert mine.split() == [str(b)]
    theirs = shared.ts_as(bob, "-l", "--user", alice.name, "--ids")
    assert theirs.split() == [str(a)]
