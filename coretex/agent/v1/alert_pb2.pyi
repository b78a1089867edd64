from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SystemAlert(_message.Message):
    __slots__ = ("level", "message", "component", "code")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    level: str
    message: str
    component: str
    code: str
    def __init__(self, level: _Optional[str] = ..., message: _Optional[str] = ..., component: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...
