-- Down: undo V3__add_case_status.sql
DROP MATERIALIZED VIEW "case_status_counts";
DROP INDEX "cases_status_idx";
ALTER TABLE "cases" DROP COLUMN "status";
