#!/usr/bin/env node
// The gRPC-Web scenario, from Node.js with the browser client library (@connectrpc/connect-web:
// fetch, HTTP/1.1, gRPC-Web framing), against a running server on its ordinary gRPC port.
//
// List measures, subscribe to WatchEvents (a gRPC-Web server stream), delete one measure and
// receive that delete's event on the stream (matched by seq, entity and snapshot), then read the
// measure again and decode the NOT_FOUND's google.rpc.ErrorInfo from the gRPC-Web trailers.
//
// No code generation: the service and message descriptors are built at run time from the
// repository's proto/ (`buf build`, the CLI pinned in package.json) into a registry, so this
// checks the contract as it is in the tree — the same way a browser app would use generated
// code from the same protos.
//
// Usage: node grpc_web_scenario.js HOST:PORT   (exits non-zero on the first failed expectation)
'use strict';

const crypto = require('node:crypto');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const { createClient, ConnectError, Code } = require('@connectrpc/connect');
const { createGrpcWebTransport } = require('@connectrpc/connect-web');
const { createFileRegistry, equals, fromBinary } = require('@bufbuild/protobuf');
const { FileDescriptorSetSchema } = require('@bufbuild/protobuf/wkt');

const ROOT = path.resolve(__dirname, '..', '..');
const BUF = path.join(__dirname, 'node_modules', '.bin', 'buf');
const {
  CALL_TIMEOUT_MS,
  WATCH_TIMEOUT_MS,
  ERROR_DOMAIN,
  ExpectationFailed,
  expect,
  runScenario,
} = require('./expect');

// Descriptors of proto/: lnrs.v1, the google/rpc protos of the error details, and the
// well-known types they import.
function loadRegistry() {
  return createFileRegistry(fromBinary(FileDescriptorSetSchema, execFileSync(BUF, ['build', 'proto', '-o', '-'], { cwd: ROOT })));
}

function service(registry, name) {
  const desc = registry.getService(name);
  if (!desc) throw new ExpectationFailed(`proto/ defines no ${name}`);
  return desc;
}

// Rejects if `promise` takes longer than `ms` (the stream's own timeout covers the whole stream;
// this bounds each wait for its next item).
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ExpectationFailed(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function run(address, registry) {
  // The browser transport: fetch, gRPC-Web binary framing, trailers in the body.
  const transport = createGrpcWebTransport({
    baseUrl: `http://${address}`,
    useBinaryFormat: true,
    defaultTimeoutMs: CALL_TIMEOUT_MS,
  });
  const entities = createClient(service(registry, 'lnrs.v1.EntityService'), transport);
  const log = createClient(service(registry, 'lnrs.v1.EventService'), transport);
  const ErrorInfo = registry.getMessage('google.rpc.ErrorInfo');
  const EVENT_KIND_ENTITY_DELETED = registry.getEnum('lnrs.v1.EventKind').values.find(
    (v) => v.name === 'EVENT_KIND_ENTITY_DELETED',
  ).number;

  let requestId = '';
  const listed = await entities.listMeasures(
    { pageSize: 10 },
    { onHeader: (headers) => (requestId = headers.get('x-request-id') || '') },
  );
  expect(listed.measures.length > 0, `ListMeasures over gRPC-Web returned ${listed.measures.length} of ${listed.totalSize}`);
  expect(requestId !== '', `the answer carries its x-request-id (${requestId})`);
  const measure = listed.measures[0];
  const measureId = measure.measureId;

  // Live only, and caught up before the delete, so the delete's event must arrive here.
  const abort = new AbortController();
  const stream = log.watchEvents(
    { kinds: [EVENT_KIND_ENTITY_DELETED], entityTypes: ['measure'], heartbeatInterval: { seconds: 1n } },
    { signal: abort.signal, timeoutMs: WATCH_TIMEOUT_MS },
  );
  const items = stream[Symbol.asyncIterator]();
  try {
    const first = await within(items.next(), WATCH_TIMEOUT_MS, 'WatchEvents caught_up');
    expect(
      !first.done && first.value.item.case === 'caughtUp',
      `WatchEvents over gRPC-Web opened (caught up at seq ${first.value && first.value.item.value && first.value.item.value.headSeq})`,
    );

    const deleted = await entities.deleteMeasure({ measureId, requestId: `node-web-${crypto.randomUUID()}` });
    const outcome = deleted.outcome;
    expect(outcome.snapshotId !== '' && !outcome.replayed, `DeleteMeasure(${measureId}) over gRPC-Web took snapshot ${outcome.snapshotId}`);
    expect(
      deleted.deleted !== undefined && equals(registry.getMessage('lnrs.v1.Measure'), deleted.deleted, measure),
      'DeleteMeasure returned the measure as it was',
    );

    let event = null;
    while (event === null) {
      const next = await within(items.next(), WATCH_TIMEOUT_MS, 'the delete event');
      if (next.done) break;
      if (next.value.item.case === 'event') event = next.value.item.value;
    }
    expect(
      event !== null &&
        event.seq === outcome.eventSeq &&
        event.kind === EVENT_KIND_ENTITY_DELETED &&
        event.entityType === 'measure' &&
        event.entityId === String(measureId) &&
        event.delete !== undefined &&
        event.delete.snapshotId === outcome.snapshotId,
      `the gRPC-Web stream delivered the delete event (seq ${outcome.eventSeq}, measure ${measureId})`,
    );
  } finally {
    abort.abort();
    // connect's stream iterators have no return(): the next read after the abort is what ends
    // the call and clears its timeout timer (else it keeps Node alive). It rejects with
    // CANCELED: expected, not a failure.
    await items.next().catch(() => {});
  }

  let gone = null;
  try {
    await entities.getMeasure({ measureId });
  } catch (err) {
    gone = ConnectError.from(err);
  }
  expect(gone !== null && gone.code === Code.NotFound, `GetMeasure after the delete: ${gone ? Code[gone.code] : 'no error'}`);
  const [info] = gone.findDetails(ErrorInfo);
  expect(
    info !== undefined &&
      info.domain === ERROR_DOMAIN &&
      info.reason === 'NOT_FOUND' &&
      info.metadata.table === 'measure' &&
      info.metadata.key === String(measureId),
    `the NOT_FOUND carries ErrorInfo ${info && info.reason} ${info && JSON.stringify(info.metadata)}`,
  );
}

async function main() {
  const address = process.argv[2];
  if (!address) {
    console.error('usage: node grpc_web_scenario.js HOST:PORT');
    return 2;
  }
  return runScenario('grpc-web', () => run(address, loadRegistry()), (err) =>
    err instanceof ConnectError ? `${Code[err.code]}: ${err.rawMessage}` : null,
  );
}

main().then((code) => {
  process.exitCode = code;
});
