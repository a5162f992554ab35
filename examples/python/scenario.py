#!/usr/bin/env python3
"""The lnrs interop scenario, from Python, against a running server.

List measures, read one measure's delete impact, delete it while a WatchEvents subscription
(opened before the delete) waits for the delete event, restore the pre-delete snapshot and see
the measure back; then delete another measure and undo just that delete (Undelete, its dry run,
the PreconditionFailure of a second attempt, GetEntityHistory); along the way decode the
google.rpc.ErrorInfo of the errors.

Stubs come from proto/ at run time (.ci/interop runs grpc_tools.protoc into ./gen), so this
checks the contract as it is in the tree, not a stale copy.

Usage: scenario.py HOST:PORT   (exits non-zero on the first failed expectation)
"""

import argparse
import pathlib
import sys
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "gen"))

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from lnrs.v1 import entity_service_pb2 as entity  # noqa: E402
from lnrs.v1 import entity_service_pb2_grpc as entity_grpc  # noqa: E402
from lnrs.v1 import event_service_pb2 as events  # noqa: E402
from lnrs.v1 import event_service_pb2_grpc as events_grpc  # noqa: E402
from lnrs.v1 import snapshot_service_pb2 as snapshots  # noqa: E402
from lnrs.v1 import snapshot_service_pb2_grpc as snapshots_grpc  # noqa: E402

# Per-call deadlines: generous for a 2-core CI machine, but a hung server still fails the run.
CALL_TIMEOUT_S = 30
RESTORE_TIMEOUT_S = 120
WATCH_TIMEOUT_S = 60
ERROR_DOMAIN = "lnrs.v1"


class ExpectationFailed(Exception):
    """One expectation of the scenario did not hold."""


class Steps:
    """Counts the checks that held, so the summary line says how much was exercised."""

    def __init__(self) -> None:
        self.passed = 0

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            raise ExpectationFailed(what)
        self.passed += 1
        print(f"ok {self.passed} - {what}", flush=True)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo packed in the status details (the grpc-status-details-bin trailer)."""
    status = rpc_status.from_call(err)
    if status is None:
        raise ExpectationFailed(f"{err.code()} carried no google.rpc.Status details")
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise ExpectationFailed(f"{err.code()} details have no ErrorInfo: {[d.type_url for d in status.details]}")


def expect_error(call, request, code: grpc.StatusCode):
    """Runs a call that must fail with `code` and returns the failure."""
    try:
        response = call(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as err:
        if err.code() != code:
            raise ExpectationFailed(f"expected {code.name}, got {err.code().name}: {err.details()}") from err
        return err
    raise ExpectationFailed(f"expected {code.name}, got a response: {response}")


def nonzero_counts(pairs) -> dict:
    return {table: rows for table, rows in pairs if rows > 0}


def run(address: str, steps: Steps) -> None:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        entities = entity_grpc.EntityServiceStub(channel)
        snaps = snapshots_grpc.SnapshotServiceStub(channel)
        log = events_grpc.EventServiceStub(channel)

        listed = entities.ListMeasures(entity.ListMeasuresRequest(page_size=10), timeout=CALL_TIMEOUT_S)
        steps.expect(len(listed.measures) > 0, f"ListMeasures returned {len(listed.measures)} of {listed.total_size}")
        before_total = listed.total_size
        measure = listed.measures[0]
        measure_id = measure.measure_id

        impact = entities.GetDeleteImpact(entity.GetDeleteImpactRequest(measure_id=measure_id), timeout=CALL_TIMEOUT_S)
        steps.expect(
            len(impact.tables) > 0
            and impact.tables[-1].table == "measure"
            and [list(r.values) for r in impact.tables[-1].rows] == [[str(measure_id)]],
            f"GetDeleteImpact(measure {measure_id}) ends with the measure's own row",
        )
        steps.expect(
            impact.total_rows == sum(len(t.rows) for t in impact.tables),
            f"GetDeleteImpact total_rows {impact.total_rows} = the rows listed",
        )

        # Subscribed (live only) and caught up before the delete, so the delete's event must
        # arrive on this stream.
        stream = log.WatchEvents(
            events.WatchEventsRequest(
                kinds=[events.EVENT_KIND_ENTITY_DELETED],
                entity_types=["measure"],
                heartbeat_interval=duration_pb2.Duration(seconds=1),
            ),
            timeout=WATCH_TIMEOUT_S,
        )
        try:
            first = next(stream)
            steps.expect(first.WhichOneof("item") == "caught_up", f"WatchEvents opened (caught up at seq {first.caught_up.head_seq})")

            request_id = f"py-{uuid.uuid4()}"
            deleted = entities.DeleteMeasure(
                entity.DeleteMeasureRequest(measure_id=measure_id, request_id=request_id), timeout=CALL_TIMEOUT_S
            )
            outcome = deleted.outcome
            snapshot_id = outcome.snapshot_id
            steps.expect(snapshot_id != "" and not outcome.replayed, f"DeleteMeasure took snapshot {snapshot_id}")
            steps.expect(deleted.deleted == measure, "DeleteMeasure returned the measure as it was")
            steps.expect(
                nonzero_counts((r.table, r.rows) for r in outcome.rows_removed)
                == nonzero_counts((t.table, len(t.rows)) for t in impact.tables),
                "DeleteMeasure removed exactly the rows GetDeleteImpact listed",
            )

            retried = entities.DeleteMeasure(
                entity.DeleteMeasureRequest(measure_id=measure_id, request_id=request_id), timeout=CALL_TIMEOUT_S
            )
            steps.expect(
                retried.outcome.replayed and retried.outcome.snapshot_id == snapshot_id,
                "a retried DeleteMeasure (same request_id) replays the first outcome",
            )

            event = None
            for item in stream:
                if item.WhichOneof("item") == "event":
                    event = item.event
                    break
            steps.expect(
                event is not None
                and event.seq == outcome.event_seq
                and event.kind == events.EVENT_KIND_ENTITY_DELETED
                and event.entity_type == "measure"
                and event.entity_id == str(measure_id)
                and event.delete.snapshot_id == snapshot_id
                and event.before.measure == measure,
                f"WatchEvents delivered the delete event (seq {outcome.event_seq})",
            )
        finally:
            stream.cancel()

        snapshot = snaps.GetSnapshot(snapshots.GetSnapshotRequest(snapshot_id=snapshot_id), timeout=CALL_TIMEOUT_S).snapshot
        steps.expect(
            snapshot.operation == snapshots.SNAPSHOT_OPERATION_DELETE
            and snapshot.entity_type == "measure"
            and snapshot.entity_id == str(measure_id),
            "GetSnapshot describes the pre-delete snapshot",
        )

        gone = expect_error(entities.GetMeasure, entity.GetMeasureRequest(measure_id=measure_id), grpc.StatusCode.NOT_FOUND)
        info = error_info(gone)
        steps.expect(
            info.domain == ERROR_DOMAIN
            and info.reason == "NOT_FOUND"
            and info.metadata.get("table") == "measure"
            and info.metadata.get("key") == str(measure_id),
            f"GetMeasure after the delete: NOT_FOUND, ErrorInfo {info.reason} {dict(info.metadata)}",
        )

        unconfirmed = expect_error(
            snaps.RestoreSnapshot,
            snapshots.RestoreSnapshotRequest(snapshot_id=snapshot_id),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        info = error_info(unconfirmed)
        steps.expect(
            info.domain == ERROR_DOMAIN and info.reason == "RESTORE_NOT_CONFIRMED",
            f"RestoreSnapshot without confirm_snapshot_id: FAILED_PRECONDITION, ErrorInfo {info.reason}",
        )

        restored = snaps.RestoreSnapshot(
            snapshots.RestoreSnapshotRequest(
                snapshot_id=snapshot_id, confirm_snapshot_id=snapshot_id, request_id=f"py-{uuid.uuid4()}"
            ),
            timeout=RESTORE_TIMEOUT_S,
        )
        failed_checks = [c.name for c in restored.report.checks if not c.passed]
        steps.expect(
            not restored.rolled_back and restored.report.passed and restored.restored.snapshot_id == snapshot_id,
            f"RestoreSnapshot verified and kept ({len(restored.report.checks)} checks; "
            f"failed: {failed_checks}; rollback: {restored.rollback_reason!r})",
        )
        steps.expect(restored.safety_snapshot_id != "", f"RestoreSnapshot took safety snapshot {restored.safety_snapshot_id}")

        back = entities.GetMeasure(entity.GetMeasureRequest(measure_id=measure_id), timeout=CALL_TIMEOUT_S).measure
        steps.expect(back == measure, f"GetMeasure after the restore: measure {measure_id} is back, unchanged")
        relisted = entities.ListMeasures(entity.ListMeasuresRequest(page_size=10), timeout=CALL_TIMEOUT_S)
        steps.expect(relisted.total_size == before_total, f"ListMeasures total is {before_total} again")

        undelete_one(entities, log, listed.measures[1], steps)


def precondition_failure(err: grpc.RpcError) -> error_details_pb2.PreconditionFailure:
    """The PreconditionFailure packed in the status details."""
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            return failure
    raise ExpectationFailed("FAILED_PRECONDITION without a PreconditionFailure")


def undelete_one(entities, log, measure, steps: Steps) -> None:
    """Delete a measure, undo just that delete (dry run first), and see a second undo refused."""
    deleted = entities.DeleteMeasure(
        entity.DeleteMeasureRequest(measure_id=measure.measure_id), timeout=CALL_TIMEOUT_S
    ).outcome
    removed = nonzero_counts((t.table, t.rows) for t in deleted.rows_removed)
    dry = entities.Undelete(entity.UndeleteRequest(event_seq=deleted.event_seq, dry_run=True), timeout=CALL_TIMEOUT_S)
    steps.expect(
        dry.event_seq == 0 and not dry.conflicts and nonzero_counts((t.table, t.rows) for t in dry.rows_restored) == removed,
        f"Undelete dry run would put back exactly the {sum(removed.values())} rows the delete removed",
    )
    done = entities.Undelete(
        entity.UndeleteRequest(event_seq=deleted.event_seq, request_id=f"py-{uuid.uuid4()}"), timeout=CALL_TIMEOUT_S
    )
    back = entities.GetMeasure(entity.GetMeasureRequest(measure_id=measure.measure_id), timeout=CALL_TIMEOUT_S).measure
    steps.expect(
        done.source == "event" and done.delete_event_seq == deleted.event_seq and back == measure,
        f"Undelete put measure {measure.measure_id} back from the delete's row images (event {done.event_seq})",
    )
    again = expect_error(
        entities.Undelete, entity.UndeleteRequest(event_seq=deleted.event_seq), grpc.StatusCode.FAILED_PRECONDITION
    )
    kinds = {v.type for v in precondition_failure(again).violations}
    steps.expect(
        error_info(again).reason == "UNDELETE_CONFLICT" and "ALREADY_UNDELETED" in kinds,
        f"a second Undelete of the same delete is a conflict: {sorted(kinds)}",
    )
    history = log.GetEntityHistory(
        events.GetEntityHistoryRequest(entity_type="measure", entity_id=str(measure.measure_id)),
        timeout=CALL_TIMEOUT_S,
    )
    steps.expect(
        [e.kind for e in history.events[:2]] == [events.EVENT_KIND_ENTITY_UNDELETED, events.EVENT_KIND_ENTITY_DELETED],
        "GetEntityHistory lists the undelete, then the delete (newest first)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="server address, HOST:PORT")
    args = parser.parse_args()
    steps = Steps()
    try:
        run(args.address, steps)
        print(f"python: {steps.passed} passed, 0 failed", flush=True)
        return 0
    except ExpectationFailed as failed:
        print(f"not ok - {failed}", file=sys.stderr, flush=True)
    except grpc.RpcError as err:
        print(f"not ok - unexpected RPC failure: {err.code().name}: {err.details()}", file=sys.stderr, flush=True)
    except grpc.FutureTimeoutError:
        print(f"not ok - could not connect to {args.address}", file=sys.stderr, flush=True)
    except StopIteration:
        print("not ok - WatchEvents ended before its first message", file=sys.stderr, flush=True)
    print(f"python: {steps.passed} passed, 1 failed", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
