-- The booking store (PostgreSQL). Times and durations are BIGINT unix nanoseconds; flags are
-- BIGINT 0/1 so both backends read them the same way.
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- One row: the lock, its message and the manifest (JSON) with a version counter that every
-- server process checks before using its cached copy.
CREATE TABLE settings (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    locked BIGINT NOT NULL,
    message TEXT NOT NULL,
    manifest TEXT,
    manifest_version BIGINT NOT NULL
);
INSERT INTO settings (id, locked, message, manifest, manifest_version)
VALUES (1, 0, 'Welcome to the interval booking store', NULL, 0);

CREATE TABLE resources (
    name TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE users (
    name TEXT PRIMARY KEY
);

CREATE TABLE user_groups (
    user_name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_name, group_name)
);

CREATE TABLE user_usage (
    user_name TEXT NOT NULL,
    policy TEXT NOT NULL,
    nanos BIGINT NOT NULL,
    PRIMARY KEY (user_name, policy)
);

-- Current (old = 0) and old (old = 1) bookings. A name is unique among current bookings
-- only: a replaced booking's cancelled copy may share its name.
CREATE TABLE bookings (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    policy TEXT NOT NULL,
    slot TEXT NOT NULL,
    resource TEXT NOT NULL,
    user_name TEXT NOT NULL,
    start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL,
    cancelled BIGINT NOT NULL DEFAULT 0,
    cancelled_at BIGINT,
    cancelled_by TEXT,
    started BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    unfulfilled BIGINT NOT NULL DEFAULT 0,
    old BIGINT NOT NULL DEFAULT 0,
    grace_at BIGINT
);
CREATE UNIQUE INDEX bookings_current_name ON bookings (name) WHERE old = 0;
-- Per-user reads and counts.
CREATE INDEX bookings_user ON bookings (user_name, old, end_ns);
-- Pruning.
CREATE INDEX bookings_current_end ON bookings (end_ns) WHERE old = 0;
-- Grace checks.
CREATE INDEX bookings_grace ON bookings (grace_at) WHERE old = 0 AND grace_at IS NOT NULL;

-- The diaries: one row per exclusive current booking. Half-open ranges ('[)' is int8range's
-- default) may not overlap on one resource.
CREATE TABLE reservations (
    booking TEXT PRIMARY KEY,
    resource TEXT NOT NULL,
    start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL,
    CONSTRAINT reservations_no_overlap
        EXCLUDE USING gist (resource WITH =, int8range(start_ns, end_ns) WITH &&)
);
CREATE INDEX reservations_resource_end ON reservations (resource, end_ns);
CREATE INDEX reservations_end ON reservations (end_ns);

-- Relay deny calls queued by cancellations of started bookings, sent by a worker.
CREATE TABLE deny_calls (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relay_url TEXT NOT NULL,
    booking TEXT NOT NULL,
    exp BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX deny_calls_due ON deny_calls (state, next_attempt_at);
