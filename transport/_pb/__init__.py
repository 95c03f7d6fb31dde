"""Code generated from ``transport/protos`` (committed; CI checks it is current).

Regenerate with ``python -m transport._pb.regen`` after editing a .proto file. The
``*_pb2`` modules are protoc's message classes (with ``.pyi`` stubs); the ``*_rpc`` modules
hold typed method descriptors for :mod:`transport._bridge`. Hand-written here:
``regen.py`` and ``_methods.py``.
"""
