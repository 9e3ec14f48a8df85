-- A registry as schema version 1 (the first release) wrote it: two example patients,
-- a superseded and a retracted measurement. Frozen: never regenerate it from the
-- current code; tests/test_registry.py loads it and checks a newer release migrates it.
PRAGMA user_version = 1;
PRAGMA application_id = 1347571540;
BEGIN TRANSACTION;
CREATE TABLE entries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    patient     TEXT NOT NULL REFERENCES patients(id),
    kind        TEXT NOT NULL CHECK (kind IN ('base', 'measurement', 'mrd', 'count', 'event')),
    data        TEXT NOT NULL CHECK (json_valid(data)),
    recorded_by TEXT NOT NULL CHECK (length(recorded_by) > 0),
    recorded_at TEXT NOT NULL,
    reason      TEXT,
    supersedes  INTEGER REFERENCES entries(seq),
    retracts    INTEGER REFERENCES entries(seq),
    CHECK (supersedes IS NULL OR retracts IS NULL),
    CHECK ((retracts IS NULL) = (data != 'null')),
    CHECK ((supersedes IS NULL AND retracts IS NULL) OR length(reason) > 0)
);
INSERT INTO "entries" VALUES(1,'INF-0003','base','{"id":"INF-0003","protocol":"interfant06-blinatumomab","birth_date":"2025-12-01","sex":"female","diagnosis_date":"2026-06-15","kmt2a":"rearranged","wbc_at_diagnosis":85,"prednisone_response":"good","cns_status":"CNS1"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(2,'INF-0003','measurement','{"date":"2026-06-15","height_cm":65,"weight_kg":7.0}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(3,'INF-0003','measurement','{"date":"2026-09-14","height_cm":68,"weight_kg":7.8}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(4,'INF-0003','mrd','{"timepoint":"end_of_induction","date":"2026-07-17","value":0.006}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(5,'INF-0003','mrd','{"timepoint":"blinatumomab_day15","date":"2026-08-03","value":0.0004}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(6,'INF-0003','mrd','{"timepoint":"blinatumomab_day29","date":"2026-08-17","value":0.0001}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(7,'INF-0003','event','{"type":"element_started","element":"induction","date":"2026-06-15"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(8,'INF-0003','event','{"type":"element_completed","element":"induction","date":"2026-07-19"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(9,'INF-0003','event','{"type":"element_started","element":"blinatumomab","date":"2026-07-20"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(10,'INF-0003','event','{"type":"element_completed","element":"blinatumomab","date":"2026-08-17"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(11,'INF-0003','event','{"type":"element_started","element":"ib","date":"2026-08-18"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(12,'INF-0003','event','{"type":"element_completed","element":"ib","date":"2026-09-15"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(13,'INF-0003','event','{"type":"element_started","element":"marma","date":"2026-09-16"}','alice','2026-10-01T09:15:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(14,'INF-0002','base','{"id":"INF-0002","protocol":"interfant06-blinatumomab","birth_date":"2026-03-15","sex":"male","diagnosis_date":"2026-07-20","kmt2a":"rearranged","wbc_at_diagnosis":420,"day8_blasts_per_ul":2400,"cns_status":"CNS2"}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(15,'INF-0002','measurement','{"date":"2026-07-20","height_cm":61,"weight_kg":6.1}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(16,'INF-0002','measurement','{"date":"2026-09-01","height_cm":63,"weight_kg":6.6}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(17,'INF-0002','mrd','{"timepoint":"end_of_induction","date":"2026-08-21","value":0.004}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(18,'INF-0002','mrd','{"timepoint":"blinatumomab_day15","date":"2026-09-09","value":0.0002}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(19,'INF-0002','event','{"type":"element_started","element":"induction","date":"2026-07-20"}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(20,'INF-0002','event','{"type":"element_completed","element":"induction","date":"2026-08-23"}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(21,'INF-0002','event','{"type":"element_started","element":"blinatumomab","date":"2026-08-27","note":"started 3 days late: counts recovering"}','bob','2026-10-02T10:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(22,'INF-0003','measurement','{"date": "2026-10-01", "height_cm": 69, "weight_kg": 8.9}','alice','2026-10-03T08:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(23,'INF-0003','measurement','{"date": "2026-10-01", "height_cm": 69, "weight_kg": 8.1}','alice','2026-10-03T08:05:00.000000Z','weight typed wrong',22,NULL);
INSERT INTO "entries" VALUES(24,'INF-0002','measurement','{"date": "2026-10-01", "height_cm": 64, "weight_kg": 6.9}','bob','2026-10-04T08:00:00.000000Z',NULL,NULL,NULL);
INSERT INTO "entries" VALUES(25,'INF-0002','measurement','null','bob','2026-10-04T08:10:00.000000Z','recorded for the wrong patient',NULL,24);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "meta" VALUES('application','protocol patient registry');
INSERT INTO "meta" VALUES('created','2026-10-01T09:00:00.000000Z');
INSERT INTO "meta" VALUES('migration.1','2026-10-01T09:00:00.000000Z patients and the append-only entry log (protocol 0.1.0)');
CREATE TABLE patients (
    id         TEXT PRIMARY KEY,
    base       TEXT NOT NULL CHECK (json_valid(base)),
    created    TEXT NOT NULL,
    created_by TEXT NOT NULL
);
INSERT INTO "patients" VALUES('INF-0003','{"id":"INF-0003","protocol":"interfant06-blinatumomab","birth_date":"2025-12-01","sex":"female","diagnosis_date":"2026-06-15","kmt2a":"rearranged","wbc_at_diagnosis":85,"prednisone_response":"good","cns_status":"CNS1"}','2026-10-01T09:15:00.000000Z','alice');
INSERT INTO "patients" VALUES('INF-0002','{"id":"INF-0002","protocol":"interfant06-blinatumomab","birth_date":"2026-03-15","sex":"male","diagnosis_date":"2026-07-20","kmt2a":"rearranged","wbc_at_diagnosis":420,"day8_blasts_per_ul":2400,"cns_status":"CNS2"}','2026-10-02T10:00:00.000000Z','bob');
CREATE INDEX entries_by_patient ON entries(patient, seq);
CREATE UNIQUE INDEX entries_corrected_once ON entries(coalesce(supersedes, retracts))
    WHERE supersedes IS NOT NULL OR retracts IS NOT NULL;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: record a correction instead'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: record a retraction instead'); END;
CREATE TRIGGER patients_no_update BEFORE UPDATE ON patients
BEGIN SELECT RAISE(ABORT, 'a registered patient is never changed: correct it with a base entry'); END;
CREATE TRIGGER patients_no_delete BEFORE DELETE ON patients
BEGIN SELECT RAISE(ABORT, 'a registered patient is never deleted'); END;
CREATE TRIGGER entries_correct_own_kind BEFORE INSERT ON entries
WHEN NEW.supersedes IS NOT NULL OR NEW.retracts IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'a correction must target an earlier entry of the same patient and kind')
    WHERE NOT EXISTS (SELECT 1 FROM entries AS e WHERE e.seq = coalesce(NEW.supersedes, NEW.retracts)
                      AND e.patient = NEW.patient AND e.kind = NEW.kind AND e.retracts IS NULL);
END;
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('entries',25);
COMMIT;
