"""A Python grpcio client (gRPC's C core) against a real engine.

Usage: client.py TARGET TOKEN STUBS_DIR [AUTHORITY]

TARGET is a grpcio target (`unix:///path/engine.sock` or `host:port`),
STUBS_DIR holds the stubs `grpc_tools.protoc` generated from proto/, and
AUTHORITY, when given, is passed as `grpc.default_authority` (what the
README tells C-core clients to do on the Unix socket).

Calls health, reflection, Console.Whoami, Runs.SubmitRun and Console.Watch
(first message), and prints one JSON object with what it got. Any failure
raises, and the exit status says so.
"""

import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

target, token, stubs = sys.argv[1], sys.argv[2], sys.argv[3]
authority = sys.argv[4] if len(sys.argv) > 4 else None
sys.path.insert(0, stubs)

from opsdeck.v1 import services_pb2, services_pb2_grpc  # noqa: E402

TIMEOUT = 20
options = [("grpc.default_authority", authority)] if authority else []
metadata = [("authorization", f"Bearer {token}")]
out = {}

with grpc.insecure_channel(target, options=options) as channel:
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        timeout=TIMEOUT,
    )
    out["services"] = sorted(
        s.name for a in answers for s in a.list_services_response.service
    )

    console = services_pb2_grpc.ConsoleStub(channel)
    me = console.Whoami(services_pb2.WhoamiRequest(), metadata=metadata, timeout=TIMEOUT)
    out["whoami"] = {
        "identity": me.identity,
        "transport": me.transport,
        "roles": list(me.roles),
    }

    runs = services_pb2_grpc.RunsStub(channel)
    spec = f'name = "python-{me.transport}"\n[[step]]\nqueue = "default"\nrun = "true"\n'
    submitted = runs.SubmitRun(
        services_pb2.SubmitRunRequest(spec=spec, reason="python client"),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    out["run"] = {"id": submitted.run.id, "name": submitted.run.name}

    watch = console.Watch(
        services_pb2.WatchRequest(resume_after_seq=0), metadata=metadata, timeout=TIMEOUT
    )
    first = next(watch)
    out["watch_first"] = first.WhichOneof("kind")
    watch.cancel()

print(json.dumps(out))
