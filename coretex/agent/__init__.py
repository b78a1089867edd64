"""Generated CAP v2 protobuf code. Do not edit; run tools/genproto.py."""
