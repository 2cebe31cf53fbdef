from conftest import Spool


def test_enqueue_list_wait(spool: Spool) -> None:
    job = spool.submit("sh", "-c", "echo hi; exit 3")
    done = spool.run("-w", str(job))
    assert done.returncode == 3
    assert spool.job(job)["exit_code"] == 3
    shown = spool.run("-c", str(job))
    assert shown.returncode == 3 and "hi" in shown.stdout
