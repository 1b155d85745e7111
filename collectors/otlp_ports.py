"""The OTLP default ports (the specification's), apart from the receiver so that option defaults
can name them without importing gRPC."""

DEFAULT_HTTP_PORT = 4318
DEFAULT_GRPC_PORT = 4317
