#!/usr/bin/env python3
"""Waits until an lnrs server reports SERVING on grpc.health.v1 for "" and the three services.

Uses Health.Watch with wait_for_ready, so it follows the server's own status changes instead of
polling; the first start of an empty data directory loads the reference dataset first.

Usage: wait_serving.py HOST:PORT [--timeout SECONDS]   (exit 0 once serving, 1 otherwise)
"""

import argparse
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("", "lnrs.v1.EntityService", "lnrs.v1.SnapshotService", "lnrs.v1.EventService")


def wait(address: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in SERVICES:
            left = max(deadline - time.monotonic(), 0.1)
            stream = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=left, wait_for_ready=True)
            try:
                for update in stream:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                else:
                    raise RuntimeError(f"health stream for {service!r} ended before SERVING")
            finally:
                stream.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    started = time.monotonic()
    try:
        wait(args.address, args.timeout)
    except (grpc.RpcError, RuntimeError) as err:
        detail = f"{err.code().name}: {err.details()}" if isinstance(err, grpc.RpcError) else str(err)
        print(f"server at {args.address} not SERVING: {detail}", file=sys.stderr)
        return 1
    print(f"server at {args.address} SERVING after {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
