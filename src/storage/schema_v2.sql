-- v2: request ids are scoped to the calling principal (the same id from two callers is two
-- requests), and the log is pruned by age and count, oldest first.
CREATE TABLE lnrs_request_log_v2 (
    principal   VARCHAR NOT NULL,  -- the caller: a token's name, a certificate subject, 'anonymous'
    request_id  VARCHAR NOT NULL,
    rpc         VARCHAR NOT NULL,  -- full method path, "/lnrs.v1.EntityService/DeleteMeasure"
    fingerprint VARCHAR NOT NULL,  -- BLAKE3 of the canonical request: a reused id with another request is refused
    time_us     BIGINT NOT NULL,
    response    VARCHAR NOT NULL,  -- JSON of the first response, replayed on retry (AIP-155)
    PRIMARY KEY (principal, request_id)
);
INSERT INTO lnrs_request_log_v2
    SELECT 'anonymous', request_id, rpc, fingerprint, time_us, response FROM lnrs_request_log;
DROP TABLE lnrs_request_log;
ALTER TABLE lnrs_request_log_v2 RENAME TO lnrs_request_log;
