"""Idempotent submission, in-process: a submission sent again with the same token (the client
does so when the connection dropped before the reply) is answered with the ids it was given."""

from __future__ import annotations

from typing import Any

from core_harness import Core, MakeCore

from spooler.daemon.table import TOKEN_RETENTION
from spooler.protocol.requests import Slots, Submit


def _idle(make_core: MakeCore) -> Core:
    """A core whose queue starts nothing (0 slots): the queue shows every job."""
    c = make_core(1)
    c.request(Slots(set=0))
    return c


def _submit(c: Core, token: str | None, **fields: Any) -> dict[str, Any]:
    fields.setdefault("command", ["true"])
    reply = c.request(Submit(cwd=str(c.root), env={"PATH": "/bin"}, token=token, **fields))
    assert reply is not None and reply["ok"], reply
    return reply


def test_a_repeated_submission_gets_the_same_id_and_queues_nothing(make_core: MakeCore) -> None:
    c = _idle(make_core)
    first = _submit(c, "t1")["id"]
    assert _submit(c, "t1")["id"] == first
    other = _submit(c, "t2")["id"]
    untokened = [_submit(c, None)["id"], _submit(c, None)["id"]]  # no token: every call queues
    assert c.queue() == [first, other, *untokened]


def test_the_token_survives_a_restart(make_core: MakeCore) -> None:
    c = _idle(make_core)
    first = _submit(c, "t1")["id"]
    c.restart()  # the daemon died after recording the job, before its reply went out
    assert _submit(c, "t1")["id"] == first
    assert c.queue() == [first]


def test_a_repeated_batch_queues_only_what_was_cut_short(make_core: MakeCore) -> None:
    c = _idle(make_core)
    batch = [["echo", str(i)] for i in range(5)]
    ids = _submit(c, "b", command=None, batch=batch)["ids"]
    # As if the daemon had died after recording the first two jobs of the batch:
    for job_id in ids[2:]:
        c.sp.events.removed(c.job(job_id))
        c.sp.table.tokens["b"].remove(job_id)
    c.restart()
    again = _submit(c, "b", command=None, batch=batch)["ids"]
    assert again[:2] == ids[:2] and len(again) == 5 and len(set(again)) == 5
    assert [c.job(i).command for i in again] == batch
    assert _submit(c, "b", command=None, batch=batch)["ids"] == again  # and a third time: nothing


def test_a_chained_batch_resumes_its_chain(make_core: MakeCore) -> None:
    c = _idle(make_core)
    before = _submit(c, None)["id"]
    batch = [["echo", str(i)] for i in range(3)]
    ids = _submit(c, "c", command=None, batch=batch, after_last=True)["ids"]
    c.sp.events.removed(c.job(ids[2]))
    c.sp.table.tokens["c"].remove(ids[2])
    again = _submit(c, "c", command=None, batch=batch, after_last=True)["ids"]
    assert [c.job(i).after for i in again] == [[before], [ids[0]], [ids[1]]]


def test_old_tokens_are_forgotten(make_core: MakeCore) -> None:
    c = _idle(make_core)
    old = _submit(c, "old")["id"]
    c.loop.advance(TOKEN_RETENTION + 1)
    _submit(c, "new")
    assert "old" not in c.sp.table.tokens and c.job(old).token is None
    c.restart()
    assert list(c.sp.table.tokens) == ["new"]
    assert _submit(c, "old")["id"] != old  # past the retention a token is a new submission
