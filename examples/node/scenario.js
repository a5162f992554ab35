#!/usr/bin/env node
// The lnrs interop scenario, from Node.js (@grpc/grpc-js), against a running server.
//
// List measures, read one measure's delete impact, delete it while a WatchEvents subscription
// (opened before the delete) waits for the delete event, restore the pre-delete snapshot and see
// the measure back; along the way decode the google.rpc.ErrorInfo of two errors from the
// grpc-status-details-bin trailer.
//
// The service definitions are loaded from the repository's proto/ at run time
// (@grpc/proto-loader), so this checks the contract as it is in the tree.
//
// Usage: node scenario.js HOST:PORT   (exits non-zero on the first failed expectation)
'use strict';

const crypto = require('node:crypto');
const path = require('node:path');
const { isDeepStrictEqual } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const {
  CALL_TIMEOUT_MS,
  WATCH_TIMEOUT_MS,
  ERROR_DOMAIN,
  ExpectationFailed,
  expect,
  runScenario,
} = require('./expect');

// A restore assembles and deep-verifies a whole snapshot.
const RESTORE_TIMEOUT_MS = 120_000;

function loadServices() {
  const definition = protoLoader.loadSync(
    ['lnrs/v1/entity_service.proto', 'lnrs/v1/snapshot_service.proto', 'lnrs/v1/event_service.proto'],
    // keepCase: field names exactly as in the .proto (snake_case), like every other client.
    // longs as strings: uint64 seqs and int64 counts do not fit a JS number in general.
    { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_ROOT] },
  );
  return grpc.loadPackageDefinition(definition).lnrs.v1;
}

// google.rpc.Status and ErrorInfo, for the grpc-status-details-bin trailer.
function loadErrorTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/rpc/') ? path.join(PROTO_ROOT, target) : target;
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  return { Status: root.lookupType('google.rpc.Status'), ErrorInfo: root.lookupType('google.rpc.ErrorInfo') };
}

const errorTypes = loadErrorTypes();

function errorInfo(err) {
  const [bin] = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (!bin) throw new ExpectationFailed(`${grpc.status[err.code]} carried no grpc-status-details-bin`);
  const status = errorTypes.Status.decode(bin);
  const any = status.details.find((d) => d.type_url === 'type.googleapis.com/google.rpc.ErrorInfo');
  if (!any) throw new ExpectationFailed(`details have no ErrorInfo: ${status.details.map((d) => d.type_url)}`);
  return errorTypes.ErrorInfo.toObject(errorTypes.ErrorInfo.decode(any.value), { defaults: true });
}

function deadline(ms) {
  return { deadline: Date.now() + ms };
}

function call(client, method, request, timeoutMs = CALL_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    client[method](request, deadline(timeoutMs), (err, response) => (err ? reject(err) : resolve(response)));
  });
}

async function expectError(client, method, request, code) {
  let response;
  try {
    response = await call(client, method, request);
  } catch (err) {
    if (err.code !== code) {
      throw new ExpectationFailed(`${method}: expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    }
    return err;
  }
  throw new ExpectationFailed(`${method}: expected ${grpc.status[code]}, got ${JSON.stringify(response)}`);
}

function nonzeroCounts(pairs) {
  return Object.fromEntries(pairs.filter(([, rows]) => Number(rows) > 0).map(([t, rows]) => [t, Number(rows)]));
}

async function run(address) {
  const v1 = loadServices();
  const credentials = grpc.credentials.createInsecure();
  const entities = new v1.EntityService(address, credentials);
  const snapshots = new v1.SnapshotService(address, credentials);
  const log = new v1.EventService(address, credentials);
  try {
    const listed = await call(entities, 'ListMeasures', { page_size: 10 });
    expect(listed.measures.length > 0, `ListMeasures returned ${listed.measures.length} of ${listed.total_size}`);
    const beforeTotal = listed.total_size;
    const measure = listed.measures[0];
    const measureId = measure.measure_id;

    const impact = await call(entities, 'GetDeleteImpact', { measure_id: measureId });
    const own = impact.tables[impact.tables.length - 1];
    expect(
      own !== undefined && own.table === 'measure' && isDeepStrictEqual(own.rows.map((r) => r.values), [[String(measureId)]]),
      `GetDeleteImpact(measure ${measureId}) ends with the measure's own row`,
    );
    expect(
      Number(impact.total_rows) === impact.tables.reduce((n, t) => n + t.rows.length, 0),
      `GetDeleteImpact total_rows ${impact.total_rows} = the rows listed`,
    );

    // Subscribed (live only) and caught up before the delete, so the delete's event must
    // arrive on this stream.
    const stream = log.WatchEvents(
      { kinds: ['EVENT_KIND_ENTITY_DELETED'], entity_types: ['measure'], heartbeat_interval: { seconds: 1 } },
      deadline(WATCH_TIMEOUT_MS),
    );
    // Cancelling below ends the stream with CANCELLED: expected, not a failure.
    stream.on('error', () => {});
    const items = stream[Symbol.asyncIterator]();
    let snapshotId;
    let outcome;
    try {
      const first = await items.next();
      expect(
        !first.done && first.value.item === 'caught_up',
        `WatchEvents opened (caught up at seq ${first.value && first.value.caught_up && first.value.caught_up.head_seq})`,
      );

      const requestId = `node-${crypto.randomUUID()}`;
      const deleted = await call(entities, 'DeleteMeasure', { measure_id: measureId, request_id: requestId });
      outcome = deleted.outcome;
      snapshotId = outcome.snapshot_id;
      expect(snapshotId !== '' && !outcome.replayed, `DeleteMeasure took snapshot ${snapshotId}`);
      expect(isDeepStrictEqual(deleted.deleted, measure), 'DeleteMeasure returned the measure as it was');
      expect(
        isDeepStrictEqual(
          nonzeroCounts(outcome.rows_removed.map((r) => [r.table, r.rows])),
          nonzeroCounts(impact.tables.map((t) => [t.table, t.rows.length])),
        ),
        'DeleteMeasure removed exactly the rows GetDeleteImpact listed',
      );

      const retried = await call(entities, 'DeleteMeasure', { measure_id: measureId, request_id: requestId });
      expect(
        retried.outcome.replayed && retried.outcome.snapshot_id === snapshotId,
        'a retried DeleteMeasure (same request_id) replays the first outcome',
      );

      let event = null;
      for (;;) {
        const next = await items.next();
        if (next.done) break;
        if (next.value.item === 'event') {
          event = next.value.event;
          break;
        }
      }
      expect(
        event !== null &&
          event.seq === outcome.event_seq &&
          event.kind === 'EVENT_KIND_ENTITY_DELETED' &&
          event.entity_type === 'measure' &&
          event.entity_id === String(measureId) &&
          event.delete.snapshot_id === snapshotId &&
          isDeepStrictEqual(event.before.measure, measure),
        `WatchEvents delivered the delete event (seq ${outcome.event_seq})`,
      );
    } finally {
      stream.cancel();
    }

    const { snapshot } = await call(snapshots, 'GetSnapshot', { snapshot_id: snapshotId });
    expect(
      snapshot.operation === 'SNAPSHOT_OPERATION_DELETE' &&
        snapshot.entity_type === 'measure' &&
        snapshot.entity_id === String(measureId),
      'GetSnapshot describes the pre-delete snapshot',
    );

    const gone = await expectError(entities, 'GetMeasure', { measure_id: measureId }, grpc.status.NOT_FOUND);
    let info = errorInfo(gone);
    expect(
      info.domain === ERROR_DOMAIN &&
        info.reason === 'NOT_FOUND' &&
        info.metadata.table === 'measure' &&
        info.metadata.key === String(measureId),
      `GetMeasure after the delete: NOT_FOUND, ErrorInfo ${info.reason} ${JSON.stringify(info.metadata)}`,
    );

    const unconfirmed = await expectError(
      snapshots,
      'RestoreSnapshot',
      { snapshot_id: snapshotId },
      grpc.status.FAILED_PRECONDITION,
    );
    info = errorInfo(unconfirmed);
    expect(
      info.domain === ERROR_DOMAIN && info.reason === 'RESTORE_NOT_CONFIRMED',
      `RestoreSnapshot without confirm_snapshot_id: FAILED_PRECONDITION, ErrorInfo ${info.reason}`,
    );

    const restored = await call(
      snapshots,
      'RestoreSnapshot',
      { snapshot_id: snapshotId, confirm_snapshot_id: snapshotId, request_id: `node-${crypto.randomUUID()}` },
      RESTORE_TIMEOUT_MS,
    );
    const failedChecks = restored.report.checks.filter((c) => !c.passed).map((c) => c.name);
    expect(
      !restored.rolled_back && restored.report.passed && restored.restored.snapshot_id === snapshotId,
      `RestoreSnapshot verified and kept (${restored.report.checks.length} checks; failed: ${JSON.stringify(failedChecks)}; ` +
        `rollback: ${JSON.stringify(restored.rollback_reason)})`,
    );
    expect(restored.safety_snapshot_id !== '', `RestoreSnapshot took safety snapshot ${restored.safety_snapshot_id}`);

    const back = await call(entities, 'GetMeasure', { measure_id: measureId });
    expect(isDeepStrictEqual(back.measure, measure), `GetMeasure after the restore: measure ${measureId} is back, unchanged`);
    const relisted = await call(entities, 'ListMeasures', { page_size: 10 });
    expect(relisted.total_size === beforeTotal, `ListMeasures total is ${beforeTotal} again`);
  } finally {
    entities.close();
    snapshots.close();
    log.close();
  }
}

async function main() {
  const address = process.argv[2];
  if (!address) {
    console.error('usage: node scenario.js HOST:PORT');
    return 2;
  }
  return runScenario('node', () => run(address), (err) =>
    err && typeof err.code === 'number' && err.details !== undefined
      ? `${grpc.status[err.code]}: ${err.details}`
      : null,
  );
}

main().then((code) => {
  process.exitCode = code;
});
