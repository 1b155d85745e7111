"""Sources of telemetry: OTLP files and receiver (traces, metrics) and Prometheus-compatible APIs."""
