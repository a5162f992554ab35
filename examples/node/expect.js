// What both Node scenarios share: numbered "ok N - what" lines, the first failed expectation
// ending the scenario, and the summary line `.ci/interop` prints ("<name>: N passed, F failed").
'use strict';

// Generous for a 2-core CI machine, but a hung server still fails the run.
const CALL_TIMEOUT_MS = 30_000;
const WATCH_TIMEOUT_MS = 60_000;
const ERROR_DOMAIN = 'lnrs.v1';

class ExpectationFailed extends Error {}

let passed = 0;
function expect(condition, what) {
  if (!condition) throw new ExpectationFailed(what);
  passed += 1;
  console.log(`ok ${passed} - ${what}`);
}

// Runs `scenario` and returns the process exit code. `describeRpcError` turns an RPC error of
// the scenario's client library into "CODE: message", or returns null for anything else.
async function runScenario(name, scenario, describeRpcError) {
  try {
    await scenario();
    console.log(`${name}: ${passed} passed, 0 failed`);
    return 0;
  } catch (err) {
    const rpc = err instanceof ExpectationFailed ? null : describeRpcError(err);
    if (err instanceof ExpectationFailed) {
      console.error(`not ok - ${err.message}`);
    } else if (rpc) {
      console.error(`not ok - unexpected RPC failure: ${rpc}`);
    } else {
      console.error(`not ok - ${err && err.stack ? err.stack : err}`);
    }
    console.log(`${name}: ${passed} passed, 1 failed`);
    return 1;
  }
}

module.exports = {
  CALL_TIMEOUT_MS,
  WATCH_TIMEOUT_MS,
  ERROR_DOMAIN,
  ExpectationFailed,
  expect,
  runScenario,
};
