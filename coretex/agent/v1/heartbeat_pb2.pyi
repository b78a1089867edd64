from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Heartbeat(_message.Message):
    __slots__ = ("worker_id", "region", "type", "cpu_load", "gpu_utilization", "active_jobs", "capabilities", "pool", "max_parallel_jobs", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_JOBS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    region: str
    type: str
    cpu_load: float
    gpu_utilization: float
    active_jobs: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    pool: str
    max_parallel_jobs: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, worker_id: _Optional[str] = ..., region: _Optional[str] = ..., type: _Optional[str] = ..., cpu_load: _Optional[float] = ..., gpu_utilization: _Optional[float] = ..., active_jobs: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., pool: _Optional[str] = ..., max_parallel_jobs: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...
