-- Down: undo 20260101000000_create_cases
-- Deliberately keeps "cases": the table may predate this migration (playbooks/local_sample_app.yml) and holds
-- the application's data. Drop it by hand if you really mean to. Re-applying the migration is harmless.
SELECT 1;
