"""The policy stage with its Check sent ahead: the answer is used once, only for the very request
it was asked for, and an unreachable kernel is handled exactly as without the head start."""

from __future__ import annotations

import time
from collections.abc import Callable

from coretex.agent.v1 import job_pb2, safety_pb2
from coretex.errors import KernelUnavailableError
from coretex.model.job import JobMeta, JobRecord, JobState
from coretex.scheduler.pipeline import Dispatch, PolicyCheck

Request = safety_pb2.PolicyCheckRequest
Response = safety_pb2.PolicyCheckResponse
ALLOW = Response(decision=safety_pb2.DECISION_TYPE_ALLOW, rule_id="allow-all", policy_snapshot="v1:abc")


class Kernel:
    """Records every request it was sent; answers ALLOW, or fails like an unreachable kernel."""

    def __init__(self, *, down_on_send: bool = False, down_on_answer: bool = False) -> None:
        self.sent: list[Request] = []
        self.down_on_send, self.down_on_answer = down_on_send, down_on_answer

    def ask(self, request: Request) -> Callable[[], Response]:
        if self.down_on_send:
            raise KernelUnavailableError("KERNEL_UNAVAILABLE: circuit open")
        self.sent.append(Request.FromString(request.SerializeToString()))

        def answer() -> Response:
            if self.down_on_answer:
                raise KernelUnavailableError("KERNEL_UNAVAILABLE: UNAVAILABLE")
            return ALLOW

        return answer


def _dispatch(created_at: float | None = None) -> Dispatch:
    now = time.time() if created_at is None else created_at
    record = JobRecord(job_id="j1", topic="job.echo", tenant_id="t1", state=JobState.SCHEDULED, trace_id="tr",
                       context_ptr="", created_at=now, updated_at=now, meta=JobMeta(tenant_id="t1"))
    request = job_pb2.JobRequest(job_id="j1", topic="job.echo", tenant_id="t1")
    request.meta.tenant_id = "t1"
    return Dispatch(record=record, request=request)


def test_the_answer_asked_ahead_is_used_and_the_kernel_asked_once() -> None:
    kernel = Kernel()
    stage = PolicyCheck(kernel.ask)
    dispatch = _dispatch()
    stage.ask_ahead(dispatch)

    assert stage(dispatch) is None
    assert (dispatch.decision, dispatch.rule_id, dispatch.policy_snapshot) == ("ALLOW", "allow-all", "v1:abc")
    assert len(kernel.sent) == 1 and dispatch.asked is None  # taken: a second run of the stage asks again


def test_a_request_changed_after_asking_ahead_is_asked_again() -> None:
    kernel = Kernel()
    stage = PolicyCheck(kernel.ask)
    dispatch = _dispatch()
    stage.ask_ahead(dispatch)
    dispatch.request.meta.risk_tags.append("secrets")  # what the decision must be about changed

    assert stage(dispatch) is None
    assert [list(sent.meta.risk_tags) for sent in kernel.sent] == [[], ["secrets"]]


def test_an_unreachable_kernel_ahead_is_handled_by_the_stage_as_always() -> None:
    for kernel in (Kernel(down_on_send=True), Kernel(down_on_answer=True)):
        stage = PolicyCheck(kernel.ask, kernel_wait_s=30)
        fresh = _dispatch()
        stage.ask_ahead(fresh)
        verdict = stage(fresh)
        assert verdict is not None and (verdict.state, verdict.error_code) == (JobState.SCHEDULED, "kernel_unavailable")

        stale = _dispatch(created_at=time.time() - 60)  # waited out the kernel: fail closed
        stage.ask_ahead(stale)
        verdict = stage(stale)
        assert verdict is not None and verdict.state is JobState.DENIED
        assert stale.decision == "DENY" and "KERNEL_UNAVAILABLE" in stale.reason
