"""pprof (`perftools.profiles.Profile`, gzip-compressed protobuf), as Go's net/http/pprof,
async-profiler and Pyroscope write it.

The message class is built from a descriptor declared here (the fields of profile.proto this
reader needs), so protobuf's C parser does the decoding and no generated code is vendored.
"""

from __future__ import annotations

from functools import lru_cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from analyzer.model.profile import Profile, ProfileBuilder

_U64, _I64, _MSG, _BOOL = (descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
                           descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                           descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                           descriptor_pb2.FieldDescriptorProto.TYPE_BOOL)
_STR = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL

# message -> [(field name, number, type, repeated, message type)]: the subset of profile.proto read here.
_SCHEMA = {
    "Profile": [("sample_type", 1, _MSG, True, "ValueType"), ("sample", 2, _MSG, True, "Sample"),
                ("location", 4, _MSG, True, "Location"), ("function", 5, _MSG, True, "Function"),
                ("string_table", 6, _STR, True, None), ("duration_nanos", 10, _I64, False, None),
                ("period_type", 11, _MSG, False, "ValueType"), ("period", 12, _I64, False, None),
                ("comment", 13, _I64, True, None), ("default_sample_type", 14, _I64, False, None)],
    "ValueType": [("type", 1, _I64, False, None), ("unit", 2, _I64, False, None)],
    "Sample": [("location_id", 1, _U64, True, None), ("value", 2, _I64, True, None),
               ("label", 3, _MSG, True, "Label")],
    "Label": [("key", 1, _I64, False, None), ("str", 2, _I64, False, None), ("num", 3, _I64, False, None)],
    "Location": [("id", 1, _U64, False, None), ("line", 4, _MSG, True, "Line"),
                 ("is_folded", 5, _BOOL, False, None)],
    "Line": [("function_id", 1, _U64, False, None), ("line", 2, _I64, False, None)],
    "Function": [("id", 1, _U64, False, None), ("name", 2, _I64, False, None),
                 ("system_name", 3, _I64, False, None), ("filename", 4, _I64, False, None)],
}
_PACKAGE = "profile_first.pprof"
# Labels that name the span a sample ran in (Go's otel-profiling, Pyroscope span profiles).
SPAN_NAME_LABELS = ("span_name", "span.name")
SERVICE_LABELS = ("service_name", "service.name", "service")


@lru_cache(maxsize=1)
def _profile_class():
    fd = descriptor_pb2.FileDescriptorProto(name="profile_first_pprof.proto", package=_PACKAGE, syntax="proto3")
    for name, fields in _SCHEMA.items():
        msg = fd.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=_REPEATED if repeated else _OPTIONAL)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Profile"))


class PprofError(ValueError):
    pass


def read_pprof(data: bytes, source: str, service: str | None) -> tuple[Profile, str | None]:
    """The CPU profile in `data` (already decompressed), and the service its labels name, if any."""
    msg = _profile_class()()
    try:
        msg.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise PprofError(f"not a pprof profile ({err})") from None
    strings = list(msg.string_table)
    if not strings or not msg.sample_type:
        raise PprofError("not a pprof profile (no string table or sample types)")

    def s(i: int) -> str:
        return strings[i] if 0 <= i < len(strings) else ""

    col, to_seconds = _value_column(msg, s)
    b = ProfileBuilder()
    func_code: dict[int, int] = {}
    for fn in msg.function:
        func_code[fn.id] = b.frame(s(fn.name) or s(fn.system_name) or f"0x{fn.id:x}", s(fn.filename))
    # A location holds its inlined functions innermost first; a sample's locations are leaf first.
    loc_frames: dict[int, list[int]] = {}
    for loc in msg.location:
        codes = [func_code[ln.function_id] for ln in loc.line if ln.function_id in func_code]
        loc_frames[loc.id] = codes[::-1] if codes else [b.frame(f"0x{loc.id:x}")]
    preempt = {code for fid, code in func_code.items() if b.frames[code].name == "runtime.asyncPreempt"}
    service_seen = None
    for sample in msg.sample:
        if col >= len(sample.value):
            continue
        stack: list[int] = []
        for loc_id in reversed(sample.location_id):
            stack.extend(loc_frames.get(loc_id, ()))
        # Go's asynchronous preemption lands a sample in runtime.asyncPreempt on top of the loop
        # that was running: that time is the loop's.
        while stack and stack[-1] in preempt:
            stack.pop()
        span = None
        for label in sample.label:
            key = s(label.key)
            if key in SPAN_NAME_LABELS:
                span = s(label.str)
            elif key in SERVICE_LABELS and service_seen is None:
                service_seen = s(label.str) or None
        b.add(stack, sample.value[col] * to_seconds, span)
    unit = "seconds" if to_seconds != 1.0 or s(msg.sample_type[col].unit) in ("nanoseconds", "seconds") else "samples"
    return b.finish(service, source, "pprof", unit=unit), service_seen


def _value_column(msg, s) -> tuple[int, float]:
    """Which sample value is CPU time, and the factor to seconds (1.0 for plain sample counts)."""
    types = [(s(v.type), s(v.unit)) for v in msg.sample_type]
    preferred = s(msg.default_sample_type) if msg.default_sample_type else ""
    order = [i for i, (t, _) in enumerate(types) if t == preferred] + \
            [i for i, (t, u) in enumerate(types) if t == "cpu" and u == "nanoseconds"] + \
            [i for i, (t, u) in enumerate(types) if u == "nanoseconds"] + \
            [i for i, (t, u) in enumerate(types) if t in ("samples", "cpu")]
    if not order:
        kinds = ", ".join(f"{t}/{u}" for t, u in types)
        raise PprofError(f"a pprof profile without CPU samples (sample types: {kinds}); give a CPU profile")
    i = order[0]
    t, unit = types[i]
    if unit == "nanoseconds":
        return i, 1e-9
    if unit == "microseconds":
        return i, 1e-6
    if unit == "seconds":
        return i, 1.0
    # Sample counts: seconds when the sampling period is known.
    period_unit = s(msg.period_type.unit) if msg.HasField("period_type") else ""
    if msg.period > 0 and period_unit == "nanoseconds":
        return i, msg.period * 1e-9
    return i, 1.0
