import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from coretex.agent.v1 import job_pb2 as _job_pb2
from coretex.agent.v1 import heartbeat_pb2 as _heartbeat_pb2
from coretex.agent.v1 import alert_pb2 as _alert_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BusPacket(_message.Message):
    __slots__ = ("trace_id", "sender_id", "created_at", "protocol_version", "job_request", "job_result", "heartbeat", "alert", "job_progress", "job_cancel", "signature")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_REQUEST_FIELD_NUMBER: _ClassVar[int]
    JOB_RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    JOB_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_CANCEL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    sender_id: str
    created_at: _timestamp_pb2.Timestamp
    protocol_version: int
    job_request: _job_pb2.JobRequest
    job_result: _job_pb2.JobResult
    heartbeat: _heartbeat_pb2.Heartbeat
    alert: _alert_pb2.SystemAlert
    job_progress: _job_pb2.JobProgress
    job_cancel: _job_pb2.JobCancel
    signature: bytes
    def __init__(self, trace_id: _Optional[str] = ..., sender_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., protocol_version: _Optional[int] = ..., job_request: _Optional[_Union[_job_pb2.JobRequest, _Mapping]] = ..., job_result: _Optional[_Union[_job_pb2.JobResult, _Mapping]] = ..., heartbeat: _Optional[_Union[_heartbeat_pb2.Heartbeat, _Mapping]] = ..., alert: _Optional[_Union[_alert_pb2.SystemAlert, _Mapping]] = ..., job_progress: _Optional[_Union[_job_pb2.JobProgress, _Mapping]] = ..., job_cancel: _Optional[_Union[_job_pb2.JobCancel, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...
