"""The gRPC gateway: validation, risk checks, order intake, update stream, HTTP endpoints."""
