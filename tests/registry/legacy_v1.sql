-- The registry schema as amrwatch wrote it before Alembic (PRAGMA user_version 1).
CREATE TABLE sessions (
    session_id      TEXT PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 64),
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    source          TEXT NOT NULL,
    scenario        TEXT,
    replay_of       TEXT REFERENCES sessions(session_id),
    montage         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(montage)),
    settings        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    model_sha256    TEXT,
    model_synthetic INTEGER CHECK (model_synthetic IN (0, 1)),
    patient_token   TEXT CHECK (patient_token IS NULL OR patient_token GLOB 'pt_[0-9a-f]*'),
    status          TEXT NOT NULL CHECK (status IN ('recording', 'closed', 'corrupt')),
    status_reason   TEXT
);
CREATE INDEX sessions_started ON sessions(started_at);
CREATE INDEX sessions_patient ON sessions(patient_token);

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 64),
    action      TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    row_key     TEXT NOT NULL,
    old         TEXT CHECK (old IS NULL OR json_valid(old)),
    new         TEXT CHECK (new IS NULL OR json_valid(new)),
    supersedes  INTEGER REFERENCES audit(id)
);
CREATE INDEX audit_row ON audit(table_name, row_key);

CREATE TABLE outcomes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT NOT NULL REFERENCES sessions(session_id),
    timepoint       TEXT NOT NULL CHECK (timepoint IN ('1w', '3m', '6m', '1y')),
    cohen_grade     INTEGER NOT NULL CHECK (cohen_grade BETWEEN 0 AND 4),
    outcome_class   TEXT CHECK (outcome_class IS NULL OR outcome_class IN ('cured', 'improved', 'unchanged', 'worse')),
    relief_date     TEXT,
    complications   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(complications)),
    recorded_at     TEXT NOT NULL,
    actor           TEXT NOT NULL,
    supersedes      INTEGER UNIQUE REFERENCES outcomes(id)
);
CREATE INDEX outcomes_session ON outcomes(session_id, timepoint);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: add a new row instead of changing one'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit rows are append-only: they are never deleted'); END;
CREATE TRIGGER outcomes_no_update BEFORE UPDATE ON outcomes
BEGIN SELECT RAISE(ABORT, 'outcome rows are append-only: a correction is a new row that supersedes the old one'); END;
CREATE TRIGGER outcomes_no_delete BEFORE DELETE ON outcomes
BEGIN SELECT RAISE(ABORT, 'outcome rows are append-only: a correction is a new row that supersedes the old one'); END;
CREATE TRIGGER sessions_no_delete BEFORE DELETE ON sessions
BEGIN SELECT RAISE(ABORT, 'sessions are never deleted: mark them corrupt instead'); END;
CREATE TRIGGER sessions_fixed_identity BEFORE UPDATE OF session_id, started_at, source, replay_of ON sessions
WHEN NEW.session_id IS NOT OLD.session_id OR NEW.started_at IS NOT OLD.started_at
  OR NEW.source IS NOT OLD.source OR NEW.replay_of IS NOT OLD.replay_of
BEGIN SELECT RAISE(ABORT, 'a session''s id, start time, source and replay_of never change'); END;
PRAGMA user_version=1;
